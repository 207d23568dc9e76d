"""Reading a concatenation of ``nvidia-smi -q -x`` documents (``nvidia-smi -q -x -l 10 >> f``).

Times splitting the input into its documents (``nvidia_smi_xml._documents``) and the whole read
(``nvidia_smi_xml.parse``) for 1,000 and 4,000 documents, so the growth is visible: linear work
takes ~4x as long for 4x the documents, quadratic work ~16x. The document is the real Tesla T4
capture of shared/data when present (18.6 kB), else a synthetic one of the same shape.

    .venv/bin/python bench/xml_split.py                 # 1,000 and 4,000 documents
    .venv/bin/python bench/xml_split.py --docs 500 2000 8000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetlog.ingest.readers import nvidia_smi_xml  # noqa: E402
from fleetlog.ingest.readers.base import ReadOptions  # noqa: E402

CAPTURE = ROOT.parent / "shared" / "data" / "nvidia_smi" / "telegraf__nvidia-smi-q-x__tesla-t4.xml"


def _synthetic() -> bytes:
    gpu = (
        "  <gpu id=\"00000000:00:1E.0\">\n"
        "    <fb_memory_usage><used>0 MiB</used></fb_memory_usage>\n"
        "    <utilization><gpu_util>0 %</gpu_util></utilization>\n"
        "    <temperature><gpu_temp>31 C</gpu_temp></temperature>\n"
        "    <power_readings><power_draw>9.79 W</power_draw></power_readings>\n"
        "    <clocks><sm_clock>300 MHz</sm_clock></clocks>\n"
        + "    <padding>" + "x" * 17_000 + "</padding>\n"
        "  </gpu>\n"
    )
    return (
        "<?xml version=\"1.0\" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM \"nvsmi_device_v11.dtd\">\n"
        "<nvidia_smi_log>\n  <timestamp>Fri Aug  4 11:44:30 2023</timestamp>\n"
        f"  <attached_gpus>1</attached_gpus>\n{gpu}</nvidia_smi_log>\n"
    ).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1000, 4000],
                        help="document counts to time (default: 1000 4000)")
    args = parser.parse_args(argv)
    doc = CAPTURE.read_bytes() if CAPTURE.exists() else _synthetic()
    opts = ReadOptions(node="bench", tz=UTC, time=datetime(2025, 1, 1, tzinfo=UTC))
    rows = []
    for count in args.docs:
        data = doc.rstrip(b"\n") + b"\n"
        data *= count
        started = time.perf_counter()
        documents = nvidia_smi_xml._documents(data)
        split_s = time.perf_counter() - started
        started = time.perf_counter()
        result = nvidia_smi_xml.parse(data, origin="bench", opts=opts)
        parse_s = time.perf_counter() - started
        assert len(documents) == count and len(result.events) == count, (len(documents), count)
        rows.append({"documents": count, "mb": round(len(data) / 1e6, 1),
                     "split_s": round(split_s, 3), "parse_s": round(parse_s, 3)})
        print(f"{count:>6,} documents ({len(data) / 1e6:6.1f} MB): split {split_s:7.3f} s, "
              f"whole read {parse_s:7.3f} s", flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        ratio = last["documents"] / first["documents"]
        print(f"x{ratio:g} documents: split x{last['split_s'] / max(first['split_s'], 1e-9):.1f}, "
              f"whole read x{last['parse_s'] / max(first['parse_s'], 1e-9):.1f} "
              f"(linear: x{ratio:g}; quadratic: x{ratio * ratio:g})")
    print(json.dumps({"document": str(CAPTURE) if CAPTURE.exists() else "synthetic",
                      "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
