"""The store: DuckDB files that hold every landed event, and the public SQL views over them.

- ``schema``: migrations, raw tables, public views, the XID catalog;
- ``database``: open one file (writers create or upgrade it), or the union of shards (readers);
- ``tables``: contract events -> Arrow tables, one per raw table (pure, no DuckDB);
- ``writer``: one transaction per batch, deduplicated by event id, offsets with the rows;
- ``sink``: ``StoreSink``, the one ``Sink`` (``contract.sink``) that lands events, for every stage
  (imported from its module: it loads the writer, which ``import fleetlog.ingest.store`` does not);
- ``shards``: where each Kafka partition resumes when several ingesters share a group.
"""

from __future__ import annotations

from fleetlog.ingest.store.database import decode_stored as decode_stored
from fleetlog.ingest.store.database import describe_store as describe_store
from fleetlog.ingest.store.database import open_store as open_store
from fleetlog.ingest.store.database import open_union as open_union
from fleetlog.ingest.store.database import reader_cursor as reader_cursor
from fleetlog.ingest.store.database import store_files as store_files
from fleetlog.ingest.store.database import table_counts as table_counts
from fleetlog.ingest.store.schema import PUBLIC_VIEWS as PUBLIC_VIEWS
from fleetlog.ingest.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
from fleetlog.ingest.store.schema import StoreError as StoreError
from fleetlog.ingest.store.schema import StoreLocked as StoreLocked
from fleetlog.ingest.store.schema import StoreMissing as StoreMissing
from fleetlog.ingest.store.schema import ensure_schema as ensure_schema
from fleetlog.ingest.store.schema import load_xid_catalog as load_xid_catalog
