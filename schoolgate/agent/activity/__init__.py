"""What happened on the school's network: the events the agent records and keeps.

Every query, alert, device seen, bypass attempt and bandwidth reading becomes an ``Event``. The
query path hands events to a bounded buffer; a background task writes them in batches to the
local store (``ActivityStore``), which is also the spool the collector uploader reads from.
"""
