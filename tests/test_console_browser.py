"""The operator console in a real browser (Debian Chromium, puppeteer-core) on a real node: a study goes
storescu -> node -> storescp while the PACS is down, its delivery fails; the operator logs in, sees the
study, retries the delivery (the SR then arrives once), reads the audit trail; a read-only user is refused.
The audit trail is then checked for every kind of event the node recorded.  Screenshots are kept
(``$CARDIONODE_ARTEFACTS``/console, else the test's temporary folder; the test prints it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import requests

from tests.fixtures.studies import write_ct_study
from tests.support.node_proc import ROOT, NodeProcess, node_config
from tests.support.peers import StoreSCP, free_port, storescu, wait_for
from tests.support.viewer import BROWSER_DIR, CHROMIUM_BIN
from tests.support.webhook import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = {"operator": ("olivia", "operator-password-1", "operator"),
         "readonly": ("rita", "readonly-password-1", "read-only")}


def _missing() -> list[str]:
    need = []
    if not os.path.exists(CHROMIUM_BIN):
        need.append(f"{CHROMIUM_BIN} (apt-get install chromium)")
    if shutil.which("node") is None:
        need.append("node (apt-get install nodejs)")
    if not (BROWSER_DIR / "node_modules" / "puppeteer-core").is_dir():
        need.append("puppeteer-core (cd tests/browser && npm ci)")
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        need.append("dcmtk (apt-get install dcmtk)")
    return need


def _user_add(config: Path, name: str, password: str, role: str) -> None:
    r = subprocess.run([sys.executable, "-m", "node", "user", "add", name, "--role", role, "--password-stdin",
                        "--config", str(config)], input=password + "\n", capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr


def _login(base: str, name: str, password: str) -> requests.Session:
    s = requests.Session()
    page = s.get(base + "/console/login", timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = s.post(base + "/console/login", data={"csrf": csrf, "username": name, "password": password}, timeout=30)
    assert r.status_code == 200 and name in r.text
    return s


def test_operator_console_in_chromium(tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail("console browser test needs: " + "; ".join(missing))
        pytest.skip("console browser test needs: " + "; ".join(missing))
    artefacts = Path(os.environ.get("CARDIONODE_ARTEFACTS") or tmp_path / "artefacts") / "console"
    print(f"\nconsole screenshots: {artefacts}")
    files = write_ct_study(tmp_path / "study", 3)
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    pacs_port = free_port()
    http_port = free_port()
    hook = Receiver([503])  # the first notification is retried
    config = node_config(tmp_path, {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1",
                                             "port": pacs_port}},
                         dispatch={"max_attempts": 2, "backoff_initial_s": 0.5, "backoff_max_s": 1.0, "timeout_s": 5},
                         sections={"console": {"viewer_url": "http://127.0.0.1:3000/viewer?StudyInstanceUIDs={study_uid}"},
                                   "retention": {"keep_audit_days": 30},
                                   "notifications": {"webhooks": {"ops": {"url": hook.url}},
                                                     "backoff_initial_s": 0.5}},
                         http_port=http_port)
    for name, password, role in list(USERS.values()) + [("ada", "admin-password-12", "admin")]:
        _user_add(config, name, password, role)
    base = f"http://127.0.0.1:{http_port}"
    node = NodeProcess(config).start()
    scp = StoreSCP(tmp_path / "pacs", port=pacs_port)
    try:
        assert storescu(node.port, files, calling_ae="MODALITY1").returncode == 0
        # the PACS is down: the job is done, its delivery fails after 2 attempts
        assert wait_for(lambda: node.status()["studies"][0]["state"] == "failed", 60)
        admin = _login(base, "ada", "admin-password-12")
        failed = admin.get(base + "/console/jobs", timeout=10).text
        ids = re.findall(r'id="retry-delivery-(\d+)"', failed)
        assert len(ids) == 1, node.status()
        scp.start()
        plan = {"base": base, "chromium": CHROMIUM_BIN, "out": str(artefacts), "study": study,
                "delivery": int(ids[0]),
                "users": {k: {"name": v[0], "password": v[1]} for k, v in USERS.items()}}
        plan_path = tmp_path / "console-plan.json"
        plan_path.write_text(json.dumps(plan))
        r = subprocess.run(["node", str(BROWSER_DIR / "console.mjs"), str(plan_path)], cwd=BROWSER_DIR,
                           capture_output=True, text=True, timeout=300, start_new_session=True)
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads((artefacts / "report.json").read_text())
        assert "error" not in report, report.get("error")
        steps = {s["name"]: s for s in report["steps"]}
        assert steps["01-login-page"]["has_login_form"]
        assert steps["02-studies"]["who"] == "olivia (operator)" and steps["02-studies"]["lists_study"]
        st = steps["03-study"]
        assert st["state"] == "failed" and "1 series, 3 instances" in st["text"] and "MODALITY1" in st["text"]
        assert st["viewer"] == f"http://127.0.0.1:3000/viewer?StudyInstanceUIDs={study}"
        assert "ct-test" in st["text"] and "matched" in st["text"]
        assert str(pacs_port) in steps["04-jobs-failed-delivery"]["text"]
        assert "to pacs (now failed" in steps["05-confirm-retry"]["what"]
        assert steps["06-retried"]["done"] == f"delivery {ids[0]} will be sent again now"
        assert steps["07-study-processed"]["processed"]
        rows = steps["08-audit"]["rows"]
        actions = [row[4] for row in rows]
        for expected in ("received", "routed", "job done", "delivery failed", "retry-delivery", "delivery sent"):
            assert expected in actions, (expected, actions)
        assert any(row[3] == "olivia" and row[4] == "retry-delivery" for row in rows)
        assert steps["09-readonly-jobs"]["action_links"] == 0
        assert steps["10-readonly-refused"]["status"] == 403
        assert "you are read-only" in steps["10-readonly-refused"]["message"]
        assert report["readonly_post"] == {"status": 403, "refused": True}
        assert report["page_errors"] == []
        assert all("403" in e for e in report["console_errors"]), report["console_errors"]  # the refusals only
        # the SR reached the PACS once, after the retry
        assert wait_for(lambda: len([d for d in scp.received() if d.Modality == "SR"]) == 1, 30)
        time.sleep(2)
        assert len(scp.received()) == 1
        # the audit trail, exported as JSON: every kind of event, who did what
        events = admin.get(base + "/console/audit", params={"q": study, "format": "json"}, timeout=30).json()["events"]
        by_action = {}
        for e in events:
            by_action.setdefault(e["action"], []).append(e)
        received = by_action["received"][0]
        assert received["actor"] == "MODALITY1" and received["detail"]["instances"] == 3
        assert "MODALITY1 -> CARDIONODE" in received["detail"]["association"]
        assert by_action["routed"][0]["detail"]["routes"] == "ct-test"
        assert by_action["job done"][0]["detail"]["pipeline"] == "test-sr"
        assert by_action["delivery failed"][0]["detail"]["destination"] == "pacs"
        assert by_action["delivery sent"][0]["detail"]["instances"] == 1
        assert [e["actor"] for e in by_action["retry-delivery"]] == ["olivia"]
        refused = admin.get(base + "/console/audit", params={"q": "retry-delivery refused", "format": "json"},
                            timeout=30).json()["events"]
        assert [e["actor"] for e in refused] == ["rita"]  # the POST; the confirm page is a GET, refused unrecorded
        # the delivery given up was told to the webhook (retried once after a 503) and recorded
        told = [r["body"] for r in hook.requests if r["body"]["event"] == "delivery_failed"]
        assert len(told) == 2 and told[0]["id"] == told[1]["id"] and told[0]["subject"] == study
        assert told[0]["detail"]["destination"] == "pacs" and "cannot associate" in told[0]["detail"]["error"]
        assert [e["action"] for e in by_action.get("notification sent", [])] == ["notification sent"]
    finally:
        hook.close()
        scp.stop()
        rc = node.terminate()
    assert rc == 0
