"""Real-format readers: what real clusters emit, mapped onto the contract's events.

One module per format; each exposes ``read(path, options) -> ReadResult`` and ``sniff(head)``.
``registry.read_path`` picks the reader (``--format auto`` sniffs the content), ``importer``
lands or publishes the results, ``scrape`` polls live endpoints.

=================  =========================================  ===========================
format             input                                       events
=================  =========================================  ===========================
``dcgm``           dcgm-exporter /metrics (also nvidia_gpu_     ``gpu.sampled``
                   exporter and node_exporter InfiniBand)      (``port.sampled``)
``nvidia-smi-csv`` ``nvidia-smi --query-gpu=... --format=csv``  ``gpu.sampled``
``nvidia-smi-xml`` ``nvidia-smi -q -x``                        ``gpu.sampled``
``kmsg``           dmesg / journal / ``/dev/kmsg`` XID lines    ``xid.reported``
``sacct``          ``sacct --parsable2``                       ``job.*``
``perfquery``      ``perfquery -x``                            ``port.sampled``
``sysfs-ib``       ``/sys/class/infiniband`` (folder, tarball,  ``port.sampled``
                   listing)
``jsonl``          fleetlog's own event files                  any
=================  =========================================  ===========================
"""

from typing import Final

# The names ``--format`` accepts (kept here, light to import; ``registry`` checks it matches).
FORMAT_NAMES: Final = (
    "dcgm", "nvidia-smi-csv", "nvidia-smi-xml", "kmsg", "sacct", "perfquery", "sysfs-ib", "jsonl",
)
