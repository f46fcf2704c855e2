"""Fault injection and fuzzing with fixed seeds and bounded time (docs/security.md, "Fault injection and
fuzzing"): malformed PDUs, malformed datasets and malformed multipart bodies against the real listener and
HTTP port, and kill -9 of the node at random moments.  Each test prints nothing on success; a failure names
the seed and the case, so ``pytest -k <test>`` replays it exactly.
"""
from __future__ import annotations

import io
import random
import re
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from node.state import connect
from node.web.multipart import MultipartError, find_parts
from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import NodeProcess, node_config
from tests.support.peers import StoreSCP, echoscu, storescu, wait_for
from tests.support.rawdicom import RawAssociation, associate_rq, c_store_command, pdata, pdu_header
from tests.test_ingest import CT, Node, split_part10

pytestmark = [pytest.mark.integration, pytest.mark.fault]

FAST = {"association_timeout_s": 1.0, "pdu_timeout_s": 1.0, "idle_timeout_s": 2.0, "max_pending_per_host": 4}


@pytest.fixture()
def thread_crashes():
    """Exceptions that end any thread of this process during the test (none is acceptable)."""
    crashes: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        crashes.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")
        previous(args)

    threading.excepthook = hook
    try:
        yield crashes
    finally:
        threading.excepthook = previous


def _flip(rng: random.Random, data: bytes, n: int) -> bytes:
    out = bytearray(data)
    for _ in range(n):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _pdu_case(rng: random.Random, kind: int) -> tuple[bool, bytes]:
    """(needs an established association first, bytes to send) for one fuzz case."""
    rq = associate_rq("FUZZER", "CARDIONODE", [CT])
    if kind == 0:
        return False, rng.randbytes(rng.randrange(1, 3000))
    if kind == 1:
        return False, _flip(rng, rq, rng.randrange(1, 8))
    if kind == 2:
        return False, rq[: rng.randrange(1, len(rq))]
    if kind == 3:
        return False, pdu_header(0x01, rng.randrange(0, 1 << 32)) + rq[6:]
    if kind == 4:  # random PDV structure in a P-DATA-TF
        items = b"".join(struct.pack(">IBB", rng.randrange(0, 200) if rng.random() < 0.5 else rng.randrange(1 << 32),
                                     rng.randrange(256), rng.randrange(256)) + rng.randbytes(rng.randrange(0, 100))
                         for _ in range(rng.randrange(1, 4)))
        return True, pdu_header(0x04, len(items)) + items
    if kind == 5:  # a C-STORE command, then a random or truncated dataset
        cmd = pdata(1, 0x03, c_store_command(CT, generate_uid()))
        return True, cmd + pdata(1, rng.choice([0x00, 0x02]), rng.randbytes(rng.randrange(0, 2000)))
    if kind == 6:  # a command set of random bytes
        return True, pdata(1, 0x03, rng.randbytes(rng.randrange(0, 300)))
    # any PDU type with a random body, in an established association
    body = rng.randbytes(rng.randrange(0, 200))
    return True, pdu_header(rng.randrange(1, 8), len(body)) + body


def test_fuzzed_pdus_never_stop_the_listener(tmp_path: Path, thread_crashes: list[str]) -> None:
    """160 malformed or cut PDU sequences (seed 1101), each on its own connection from one of 40 loopback
    addresses: afterwards no connection is left, no thread died, nothing was stored or left in
    ``.incoming``, and the listener stores a study byte-identical."""
    seed = 1101
    rng = random.Random(seed)
    node = Node(tmp_path, **FAST)
    try:
        for case in range(160):
            kind = case % 8
            established, payload = _pdu_case(rng, kind)
            try:
                with RawAssociation(node.port, source=f"127.0.1.{case % 40 + 1}", timeout=2) as raw:
                    if established and raw.associate(CT, calling="FUZZER") != 0x02:
                        raise AssertionError(f"seed {seed} case {case}: association refused")
                    raw.send(payload)
                    raw.closed_by_peer(0.05)
            except OSError:  # the listener closed or reset the connection: fine
                pass
        assert wait_for(lambda: node.server.connection_counts() == {"negotiating": 0, "associations": 0}, 10), \
            node.server.connection_counts()
        assert thread_crashes == []
        assert node.index.counts()["instances"] == 0
        assert not list(node.spool.incoming.iterdir())
        files = write_ct_study(tmp_path / "ct", 3)
        assert storescu(node.port, files).returncode == 0
        for f in files:
            row = node.index.get(f.stem)
            assert split_part10(node.index.absolute(row["path"]))[1] == split_part10(f)[1]
    finally:
        node.stop()


def _mutate_dataset(rng: random.Random, data: bytes) -> bytes:
    how = rng.randrange(5)
    if how == 0:
        return data[: rng.randrange(0, len(data))]
    if how == 1:
        return _flip(rng, data, rng.randrange(1, 6))
    if how == 2:  # a random element length set to undefined or huge
        at = rng.randrange(0, max(1, len(data) - 8))
        return data[:at] + struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 24])) + data[at + 4:]
    if how == 3:
        at = rng.randrange(0, len(data))
        return data[:at] + rng.randbytes(rng.randrange(1, 64)) + data[at:]
    return data[: rng.randrange(0, 64)] + b"\xfe\xff\x00\xe0" + rng.randbytes(rng.randrange(0, 64))


def test_fuzzed_datasets_get_a_defined_status_and_only_what_was_sent_is_stored(tmp_path: Path,
                                                                                 thread_crashes: list[str]) -> None:
    """120 mutated CT datasets (seed 2202) by C-STORE: every answer is success or a documented refusal
    (never 0xC211, an unexpected error), every stored file holds exactly the bytes that were sent, and the
    index matches the files."""
    seed = 2202
    rng = random.Random(seed)
    node = Node(tmp_path, **FAST)
    sent: dict[str, bytes] = {}
    try:
        sources = [split_part10(p)[1] for p in write_ct_study(tmp_path / "ct", 6)]
        raw = RawAssociation(node.port)
        assert raw.associate(CT) == 0x02
        statuses: Counter[int] = Counter()
        for case in range(120):
            data = _mutate_dataset(rng, rng.choice(sources))
            uid = _sop_uid(data) or generate_uid()
            try:
                status = raw.c_store(CT, uid, data)
            except (OSError, ConnectionError):  # association aborted by the listener: open another
                raw.close()
                raw = RawAssociation(node.port)
                assert raw.associate(CT) == 0x02
                continue
            statuses[status] += 1
            assert status in (0x0000, 0xC210, 0xA900, 0x0111), f"seed {seed} case {case}: status 0x{status:04X}"
            if status == 0x0000:
                sent[uid] = data
        raw.release()
        assert statuses[0xC210] > 20, statuses  # the mutations did reach the validation
        for uid, data in sent.items():
            row = node.index.get(uid)
            assert row is not None and split_part10(node.index.absolute(row["path"]))[1] == data
        on_disk = {p.stem for p in node.spool.root.rglob("*.dcm")}
        assert on_disk == set(sent) and node.index.counts()["instances"] == len(sent)
        assert thread_crashes == []
        assert echoscu(node.port).returncode == 0
    finally:
        node.stop()


def _sop_uid(data: bytes) -> str | None:
    """The SOP Instance UID in an (explicit VR LE) dataset, if it can still be found."""
    at = data.find(b"\x08\x00\x18\x00UI")
    if at < 0 or at + 8 > len(data):
        return None
    (length,) = struct.unpack_from("<H", data, at + 6)
    value = data[at + 8: at + 8 + length].rstrip(b"\0").decode("ascii", "replace")
    return value if re.fullmatch(r"[0-9.]{1,64}", value) else None


def test_fuzzed_multipart_framing(tmp_path: Path) -> None:
    """400 mutations of the multipart framing (seed 3303) through the parser, 60 of them through the HTTP
    port: the parser returns parts inside the body or raises MultipartError; STOW-RS answers 200/202/400/409
    (never 5xx), and whatever it stores is byte-identical to one of the two instances sent."""
    from tests.test_stow import BOUNDARY, HEADERS
    from tests.test_stow import Node as StowNode

    seed = 3303
    rng = random.Random(seed)
    files = write_ct_study(tmp_path / "ct", 2)
    originals = {p.stem: p.read_bytes() for p in files}
    good = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
                    for data in originals.values()) + f"--{BOUNDARY}--\r\n".encode()
    framing = [m.start() for m in re.finditer(re.escape(BOUNDARY.encode()) + b"|\r\n|Content-Type", good)]

    def mutate() -> bytes:
        body = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            at = rng.choice(framing) + rng.randrange(0, 8)
            how = rng.randrange(4)
            if how == 0:
                body[at:at + rng.randrange(1, 6)] = b""
            elif how == 1:
                body[at:at] = rng.choice([b"\r\n", b"--", b"\r\n\r\n", rng.randbytes(3)])
            elif how == 2 and at < len(body):
                body[at] = rng.randrange(256)
            else:
                del body[rng.randrange(len(body) // 2, len(body)):]
        return bytes(body)

    for case in range(400):
        body = mutate()
        try:
            parts = find_parts(io.BytesIO(body), BOUNDARY)
        except MultipartError:
            continue
        assert all(0 <= p.start <= p.end <= len(body) for p in parts), f"seed {seed} case {case}"

    node = StowNode(tmp_path / "stow")
    try:
        for case in range(60):
            r = requests.post(f"{node.url}/studies", data=mutate(), headers=HEADERS, timeout=30)
            assert r.status_code in (200, 202, 400, 409), f"seed {seed} case {case}: {r.status_code} {r.text[:200]}"
        stored = list((Path(node.config.node.storage_dir) / "spool").rglob("*.dcm"))
        assert all(p.read_bytes() == originals[p.stem] for p in stored)
        assert not list(node.spool.incoming.iterdir())
    finally:
        node.stop()


def _acked(output: str) -> list[str]:
    """SOP Instance UIDs storescu -v got a success response for (files are named by their UID)."""
    acked, current = [], None
    for line in output.splitlines():
        m = re.search(r"Sending file: .*/([0-9.]+)\.dcm", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
    return acked


def _delivered(scp: StoreSCP) -> Counter[str]:
    return Counter(str(ds.SOPInstanceUID) for ds in scp.received() if ds.Modality == "SR")


def _jobs(storage: Path) -> list[tuple[str, int, str]]:
    conn = connect(storage)
    try:
        return [(r["study_uid"], r["generation"], r["state"]) for r in
                conn.execute("SELECT study_uid, generation, state FROM jobs ORDER BY id")]
    except Exception:
        return []
    finally:
        conn.close()


def _pending_deliveries(storage: Path) -> int:
    conn = connect(storage)
    try:
        return conn.execute("SELECT COUNT(*) FROM deliveries WHERE state='pending'").fetchone()[0]
    except Exception:
        return -1
    finally:
        conn.close()


def test_kill9_at_random_moments_loses_nothing_acknowledged_and_processes_each_study_once(tmp_path: Path) -> None:
    """Four studies sent by storescu while the node is killed with SIGKILL at four random moments (seed
    4404): receiving, completing, running a job or dispatching.  The modality re-sends after each restart,
    as a real one does.  Afterwards every acknowledged instance is in the spool byte-identical, every study
    was processed exactly once and after all its instances, every result reached the destination, and a
    result was sent twice at most once per kill."""
    seed = 4404
    rng = random.Random(seed)
    studies = [write_ct_study(tmp_path / f"study{i}", 25) for i in range(4)]
    with StoreSCP(tmp_path / "scp") as scp:
        config = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                                 "port": scp.port}}, quiet=3.0, pipeline_options={"delay_s": 0.5})
        text = config.read_text() + "models: {providers: [cpu], warmup: false}\n"
        config.write_text(text)
        node = NodeProcess(config).start()
        acked: set[str] = set()
        try:
            for i, files in enumerate(studies):
                sender = subprocess.Popen(["storescu", "-v", "-aet", "MODALITY", "-aec", "CARDIONODE", "127.0.0.1",
                                           str(node.port), *map(str, files)], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                time.sleep(rng.uniform(0.05, 3.0))  # anywhere from mid-transfer to job and dispatch
                node.kill9()
                out, _ = sender.communicate(timeout=60)
                acked |= set(_acked(out))
                node.start()
                r = storescu(node.port, files, calling_ae="MODALITY")  # the modality re-sends the study
                assert r.returncode == 0, f"seed {seed} round {i}: {r.stdout[-1500:]}"
                acked |= {f.stem for f in files}
            uids = [str(pydicom.dcmread(fs[0]).StudyInstanceUID) for fs in studies]
            assert wait_for(lambda: {s for s, _g, st in _jobs(node.storage) if st == "done"} >= set(uids)
                            and all(st in ("done", "failed") for _s, _g, st in _jobs(node.storage)), 90), \
                _jobs(node.storage)
            assert wait_for(lambda: _pending_deliveries(node.storage) == 0, 30), "deliveries still pending"
            node.terminate()
        finally:
            node.stop_quietly()
        # every acknowledged instance is stored, byte-identical
        conn = connect(node.storage)
        try:
            rows = {r["sop_instance_uid"]: r["path"]
                    for r in conn.execute("SELECT sop_instance_uid, path FROM instances")}
            results = [r["sop_instance_uid"] for r in conn.execute("SELECT sop_instance_uid FROM results")]
        finally:
            conn.close()
        by_uid = {f.stem: f for fs in studies for f in fs}
        assert acked <= set(rows)
        for uid in acked:
            assert split_part10(node.storage / rows[uid])[1] == split_part10(by_uid[uid])[1]
        # each study processed once (the restart gives a waiting study a fresh quiet period, re-sent copies
        # do not reprocess), after all 25 instances
        jobs = _jobs(node.storage)
        assert sorted(jobs) == sorted((u, 1, "done") for u in uids), jobs
        srs = [ds for ds in scp.received() if ds.Modality == "SR"]
        for study in uids:
            last = [ds for ds in srs if ds.StudyInstanceUID == study]
            assert last and any("saw 25 instances" in str(ds.ContentSequence[0].TextValue) for ds in last), study
        delivered = _delivered(scp)
        assert set(results) <= set(delivered)
        assert sum(n - 1 for n in delivered.values()) <= len(studies)  # at most one repeat per kill
        assert not [p for p in (node.storage / "spool" / ".incoming").iterdir()]
