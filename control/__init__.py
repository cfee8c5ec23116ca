"""The flag control plane: ``strangler flags show|plan|set``.

It sits above the proxy (whose flag table, fences and rules it reads and writes), the
comparator (whose reports are its gates) and the migrators (whose sync, verify and
reverse-sync state are its other gates); nothing below imports it.
"""
