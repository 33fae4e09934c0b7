"""dcgm-exporter as a GPU source: the parser on realistic output, sentinels, MIG, the chain."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import pytest

from gpu_readers import GpuReader, NoGpuSource, parse_dcgm_metrics
from gpu_readers.dcgm import (
    DCGM_FP64_BLANK,
    DCGM_INT32_BLANK,
    DCGM_INT64_BLANK,
    DcgmExporterSource,
    is_dcgm_blank,
)
from gpu_readers.exceptions import SourceUnavailable
from schemas.contracts import validate
from tests.unit.fakes.fake_pynvml import FakeNvml

FIXTURE = Path(__file__).parent / "fakes" / "dcgm_exporter" / "three-gpus-mig.txt"
LIBRARY_NOT_FOUND = 12


@pytest.fixture(scope="module")
def text() -> str:
    return FIXTURE.read_text()


def test_one_reading_per_physical_gpu_in_index_order(text: str) -> None:
    readings = parse_dcgm_metrics(text)
    assert [(r.gpu_index, r.gpu_uuid, r.gpu_name) for r in readings] == [
        (0, "GPU-1a2b3c4d-0000-1111-2222-a100a100a100", "NVIDIA A100-SXM4-80GB"),
        (1, "GPU-5e6f7a8b-3333-4444-5555-b100b100b100", "NVIDIA H100 80GB HBM3"),
        (2, "GPU-9c0d1e2f-6666-7777-8888-7474747474a4", "Tesla T4"),
    ]


def test_a_whole_gpu_maps_every_field(text: str) -> None:
    h100 = parse_dcgm_metrics(text)[1]
    assert h100.utilization_gpu_pct == 87.0
    assert h100.memory_used_mib == 68530.0
    assert h100.memory_total_mib == 68530.0 + 12543.0 + 486.0  # used + free + reserved
    assert h100.power_draw_w == pytest.approx(612.903)
    assert h100.temperature_gpu_c == 58.0
    assert h100.clock_sm_mhz == 1980.0
    assert h100.energy_total_mj == 123456789012.0
    assert h100.power_limit_w is None  # not exported: not asked for, not "unsupported"
    assert h100.unsupported_fields == ()


def test_sentinels_and_skipped_series_are_null_and_named(text: str) -> None:
    t4 = parse_dcgm_metrics(text)[2]
    assert t4.temperature_gpu_c is None  # 9223372036854775794 = DCGM_INT64_NOT_SUPPORTED
    assert t4.power_draw_w is None  # 140737488355330.0 = DCGM_FP64_NOT_SUPPORTED
    assert t4.energy_total_mj is None  # 9223372036854775792 = DCGM_INT64_BLANK
    assert t4.clock_sm_mhz is None  # the series is absent (new exporters skip blanks)
    assert set(t4.unsupported_fields) == {
        "temperature_gpu_c",
        "power_draw_w",
        "energy_total_mj",
        "clock_sm_mhz",
    }
    assert t4.utilization_gpu_pct == 12.0
    assert t4.memory_total_mib == 15360.0


def test_mig_instances_fold_into_their_gpu(text: str) -> None:
    a100 = parse_dcgm_metrics(text)[0]
    assert a100.memory_used_mib == 20469.0 + 680.0  # summed over the two 3g.40gb instances
    assert a100.memory_total_mib == (20469.0 + 680.0) + (20011.0 + 39800.0)
    assert a100.power_draw_w == pytest.approx(212.487)  # device-wide: one instance's copy
    assert a100.clock_sm_mhz == 1410.0
    assert a100.utilization_gpu_pct is None  # not reported per MIG instance
    assert a100.unsupported_fields == ("utilization_gpu_pct",)


def test_events_from_the_fixture_satisfy_the_contract(text: str) -> None:
    with serve(text) as url:
        reader = GpuReader("gpu-node-07", sources=("dcgm-exporter",), dcgm_url=url)
        events = reader.read()
    assert [e["source"] for e in events] == ["dcgm-exporter"] * 3
    for event in events:
        validate(event)
        for name in event["unsupported_fields"]:
            assert event[name] is None
    assert events[2]["unsupported_fields"] == [
        "power_draw_w",
        "temperature_gpu_c",
        "clock_sm_mhz",
        "energy_total_mj",
    ]


@pytest.mark.parametrize(
    "value",
    [
        DCGM_FP64_BLANK, DCGM_FP64_BLANK + 1, DCGM_FP64_BLANK + 2, DCGM_FP64_BLANK + 3,
        float(DCGM_INT64_BLANK), float(DCGM_INT64_BLANK + 2),
        float(DCGM_INT32_BLANK), float(DCGM_INT32_BLANK + 3), float("nan"), float("inf"),
    ],
)  # fmt: skip
def test_every_dcgm_sentinel_is_blank(value: float) -> None:
    assert is_dcgm_blank(value)


@pytest.mark.parametrize("value", [0.0, 87.0, 612.903, 123456789012.0, DCGM_INT32_BLANK - 1.0])
def test_real_values_are_not_blank(value: float) -> None:
    assert not is_dcgm_blank(value)


def test_old_namespace_and_lower_case_labels() -> None:
    text = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="3",uuid="GPU-x",device="nvidia3",model_name="NVIDIA L4",'
        'hostname="n1"} 5\n'
    )
    [reading] = parse_dcgm_metrics(text)
    assert (reading.gpu_index, reading.gpu_uuid, reading.gpu_name) == (3, "GPU-x", "NVIDIA L4")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "# HELP up x\n# TYPE up gauge\nup 1\n",
        'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 5\n',  # no UUID: not a GPU series we can key
    ],
)
def test_no_gpu_series_is_an_error(body: str) -> None:
    with pytest.raises(ValueError, match="no DCGM_FI_DEV"):
        parse_dcgm_metrics(body)


def test_unreachable_or_wrong_url_makes_the_source_unavailable(text: str) -> None:
    with pytest.raises(
        SourceUnavailable, match=re.escape("cannot read http://127.0.0.1:9/metrics")
    ):
        DcgmExporterSource("http://127.0.0.1:9/metrics", timeout_s=2).read()
    with serve(text, status=404) as url, pytest.raises(SourceUnavailable, match="HTTP 404"):
        DcgmExporterSource(url).read()
    with (
        serve("<html>not metrics</html>") as url,
        pytest.raises(SourceUnavailable, match=re.escape(url)),
    ):
        DcgmExporterSource(url).read()


def test_dcgm_exporter_comes_after_nvml_and_smi_and_before_seed(text: str, tmp_path: Path) -> None:
    nvml = FakeNvml([])
    nvml.init_error = LIBRARY_NOT_FOUND
    with serve(text) as url:
        reader = GpuReader(
            "gpu-node-07",
            pynvml_module=nvml.module,
            nvidia_smi=str(tmp_path / "absent"),
            dcgm_url=url,
        )
        assert {e["source"] for e in reader.read()} == {"dcgm-exporter"}
    assert list(reader.skipped_sources) == ["nvml", "nvidia-smi"]
    # The exporter goes away: the next read falls through to the seed file.
    assert {e["source"] for e in reader.read()} == {"seed"}
    assert list(reader.skipped_sources) == ["nvml", "nvidia-smi", "dcgm-exporter"]


def test_configured_order_and_its_errors(text: str) -> None:
    with serve(text) as url:
        reader = GpuReader("h", sources=("dcgm-exporter", "seed"), dcgm_url=url)
        assert {e["source"] for e in reader.read()} == {"dcgm-exporter"}
    with pytest.raises(NoGpuSource, match="dcgm-exporter"):
        GpuReader("h", sources=("dcgm-exporter",), dcgm_url="http://127.0.0.1:9/m").read()
    with pytest.raises(ValueError, match="needs a URL"):
        GpuReader("h", sources=("dcgm-exporter", "seed"))
    with pytest.raises(ValueError, match="at most once"):
        GpuReader("h", sources=("seed", "seed"))
    with pytest.raises(ValueError, match="at most once"):
        GpuReader("h", sources=("dcgm",))


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        return None


class serve:  # noqa: N801 - used as a context manager, reads like a function
    """A one-URL HTTP server answering ``body`` (a stand-in for dcgm-exporter's /metrics)."""

    def __init__(self, body: str, status: int = 200) -> None:
        handler = type("Handler", (_Handler,), {"body": body.encode(), "status": status})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
