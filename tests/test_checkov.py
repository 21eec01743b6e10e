"""checkov's Bicep scan of infra/ passes: no failed check, no file it could not parse, and every
skipped check skipped inline, next to its resource, with a reason.

checkov is pinned in infra/checkov-requirements.txt and lives in its own environment
(.devstack/tools/checkov, made by scripts/bootstrap.sh --with-checkov, which scripts/test.sh runs),
since it pins an older pycep-parser than the one tests/test_infra.py uses. `--skip-download` keeps
it off the network (no policy or module downloads; without an API key nothing is uploaded). One
scan, a few seconds.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKOV = ROOT / ".devstack" / "tools" / "checkov" / "bin" / "checkov"
COMMAND = [str(CHECKOV), "--directory", "infra", "--framework", "bicep", "--skip-download",
           "--output", "json", "--compact"]

# Checks that must have run (passed or been skipped) on these resources: a check that crashes on
# an expression it cannot read disappears from the report instead of failing, so their presence is
# asserted. (resource as checkov names it, check id)
MUST_RUN = {
    ("Microsoft.Storage/storageAccounts.storage", "CKV_AZURE_59"),  # public network access
    ("Microsoft.Storage/storageAccounts.storage", "CKV_AZURE_35"),  # default network rule deny
    ("Microsoft.Storage/storageAccounts.storage", "CKV_AZURE_44"),  # TLS 1.2
    ("Microsoft.KeyVault/vaults.keyVault", "CKV_AZURE_189"),  # public network access
    ("Microsoft.KeyVault/vaults.keyVault", "CKV_AZURE_109"),  # firewall
    ("Microsoft.KeyVault/vaults.keyVault", "CKV_AZURE_110"),  # purge protection
    ("Microsoft.Web/sites.functionApp", "CKV_AZURE_222"),  # public network access (skipped, reasoned)
    ("Microsoft.Web/sites.functionApp", "CKV_AZURE_70"),  # HTTPS only
    ("Microsoft.Web/sites/config.authentication", "CKV_AZURE_56"),  # authentication on
}


@cache
def scan() -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run scripts/bootstrap.sh --with-checkov")
    result = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no report (exit {result.returncode}): {result.stderr[-2000:]}")
    return report


def test_checkov_passes_with_nothing_unparsed() -> None:
    report = scan()
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, "checkov could not parse a Bicep file (its pycep-parser is older)"
    scanned = {c["file_path"].lstrip("/") for kind in ("passed_checks", "skipped_checks")
               for c in report["results"][kind]}
    for required in ("app/storage.bicep", "app/keyvault.bicep", "app/api.bicep", "app/network.bicep"):
        assert required in scanned, f"checkov scanned nothing in {required}"


def test_every_skip_is_inline_with_a_reason() -> None:
    skipped = scan()["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert reason and reason != "No comment provided", f"{check['check_id']} on {check['resource']} has no reason"
        path = ROOT / "infra" / check["file_path"].lstrip("/")
        start, end = check["file_line_range"]
        block = path.read_text().splitlines()[start - 1 : end]
        assert any(f"checkov:skip={check['check_id']}:" in line for line in block), (
            f"{check['check_id']} on {check['resource']} is not skipped inside the resource")
    assert "--skip-check" not in COMMAND and "--soft-fail" not in COMMAND


def test_the_checks_that_matter_ran() -> None:
    results = scan()["results"]
    ran = {(c["resource"], c["check_id"]) for kind in ("passed_checks", "skipped_checks") for c in results[kind]}
    assert ran >= MUST_RUN, f"checks that did not run: {sorted(MUST_RUN - ran)}"


def test_parameter_names_mean_one_default_across_files() -> None:
    """checkov resolves a parameter by its name across every file it scans, picking any file's
    declaration: two files declaring one name with different defaults make the scan flip between
    them from run to run. So a name shared by several files has one default."""
    from pycep import BicepParser

    defaults: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "infra").rglob("*.bicep")):
        for name, param in BicepParser().parse(file_path=path).get("parameters", {}).items():
            if param["default"] is not None:
                defaults.setdefault(name, {})[path.name] = param["default"]
    for name, by_file in defaults.items():
        values = {json.dumps(value, sort_keys=True, default=str) for value in by_file.values()}
        assert len(values) == 1, f"parameter {name} has different defaults: {by_file}"
