-- Live activity: every user_activity row inserted with a recent created_at (a write of the
-- new side's, or a legacy write the forward sync just brought) NOTIFYs activity_feed with
-- its key; the activity relay of `strangler runs work` reads the row and publishes it on
-- the tenant's Redis channel, from which every proxy serves /ws/activity (proxy.realtime).
-- So a subscriber hears its tenant's writes whichever side served them. Old rows (a
-- backfill of history) announce nothing: the condition is evaluated before any call.
CREATE FUNCTION strangler_activity_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('activity_feed', json_build_object(
        'activity_id', NEW.activity_id, 'created_at', NEW.created_at,
        'subscription_id', NEW.subscription_id)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER user_activity_written AFTER INSERT ON user_activity
    FOR EACH ROW WHEN (NEW.created_at > now() - interval '5 minutes')
    EXECUTE FUNCTION strangler_activity_written();
