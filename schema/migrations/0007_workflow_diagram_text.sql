-- getWorkflow returns workFlowDiagram as the stored string, byte for byte (LEGACY.md), and
-- jsonb keeps neither key order nor whitespace: re-serializing the parsed diagram cannot
-- give the client back what it sent. So the text column now keeps the string exactly as
-- stored for every workflow, and workflow_diagram its parsed value when it is valid JSON
-- (NULL when it is not, or is empty). A parsed diagram always has its text.
ALTER TABLE workflows DROP CONSTRAINT workflows_diagram_one_form;
ALTER TABLE workflows RENAME COLUMN workflow_diagram_unparsed TO workflow_diagram_text;
ALTER TABLE workflows ADD CONSTRAINT workflows_diagram_has_text
    CHECK (workflow_diagram IS NULL OR workflow_diagram_text IS NOT NULL);
