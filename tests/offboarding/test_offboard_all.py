"""scripts/offboard-all.sh against the app hosted locally (its queue trigger carries each offboarding
out): without --apply it lists every managed account, page after page, and changes nothing; with
--apply it offboards each one and reports every outcome, a failure included; the function key and
the token come from the azd environment and the Azure CLI when none is given.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.offboarding.test_offboarding import API_USER, assert_offboarded, offboard, onboard, seed_cluster
from tests.test_deploy_scripts import fake_cli, write_state
from tests.test_http_api import call

if TYPE_CHECKING:
    from devstack.runner import LocalHost
    from tests.onboarding.conftest import World

__all__ = ["fake_cli"]

ROOT = Path(__file__).resolve().parent.parent.parent
API_CLIENT_ID = "cccccccc-0000-4000-8000-000000000003"


def offboard_all(world: World, bin_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it, with only ``bin_dir`` (and the system) on the PATH."""
    python3 = bin_dir / "python3"
    if not python3.exists():
        python3.symlink_to(sys.executable)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir), "OFFBOARD_POLL_SECONDS": "0.5", **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "offboard-all.sh"), "--cacert", world.verify, *args],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240, check=False)


def status_of(host: LocalHost, account: str) -> str:
    status: str = call(host, "GET", f"/accounts/{account}").json()["status"]
    return status


def test_the_plan_changes_nothing_then_apply_offboards_each_and_names_a_failure(host: LocalHost, world: World,
                                                                               tmp_path: Path) -> None:
    free_body = onboard(world, apiKey={"name": "all-api-key", "user": API_USER, "expiresInDays": 30},
                        sshKey={"name": "all-ssh-key", "generate": True})
    free = free_body["accountName"]
    in_use = onboard(world)["accountName"]
    gone = onboard(world)["accountName"]
    offboard(world, gone)
    [palette_account] = world.palette_accounts(in_use)
    seed_cluster(world, "payments-prod", palette_account["uid"])
    local = ("--api", host.http_url, "--function-key", host.function_key, "--no-sign-in")

    # One account a page: the listing follows continuationToken to the end.
    plan = offboard_all(world, tmp_path, *local, OFFBOARD_PAGE_SIZE="1")
    assert plan.returncode == 0, plan.stderr
    assert "2 managed account(s), 1 offboarded already" in plan.stdout
    assert f"would offboard: {free}: DELETE /api/accounts/{free}?removeSshKey=false&removeApiKey=true" in plan.stdout
    assert f"would offboard: {in_use}:" in plan.stdout and f"would offboard: {gone}" not in plan.stdout
    assert status_of(host, free) == "managed" and world.palette_accounts(free)

    applied = offboard_all(world, tmp_path, *local, "--apply", "--remove-ssh-keys", OFFBOARD_PAGE_SIZE="1")
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert f"offboarded: {free} (" in applied.stdout
    assert "    removed: Palette cloud account" in applied.stdout
    assert "    removed: SSH key all-ssh-key" in applied.stdout
    assert f"failed: {in_use} (" in applied.stdout and "account_in_use" in applied.stdout
    assert "payments-prod" in applied.stdout
    assert "summary: 1 offboarded, 1 failed, 0 still running" in applied.stdout
    assert_offboarded(world, free_body, ssh_key_kept=False)
    assert status_of(host, in_use) == "managed" and world.palette_accounts(in_use)

    again = offboard_all(world, tmp_path, *local)
    assert again.returncode == 0 and "1 managed account(s), 2 offboarded already" in again.stdout
    assert f"would offboard: {in_use}:" in again.stdout and f"would offboard: {free}" not in again.stdout


def test_with_nothing_given_it_asks_azd_and_the_azure_cli(host: LocalHost, world: World, fake_cli: Path) -> None:
    """As docs/deploy.md runs it: the API, the function key and a token for the API's scope come
    from the azd environment and the Azure CLI (a token for any other scope is refused here)."""
    account = onboard(world)["accountName"]
    write_state(fake_cli, azd_env={"SERVICE_API_URI": host.http_url.removesuffix("/api"),
                                   "API_CLIENT_ID": API_CLIENT_ID, "AZURE_RESOURCE_GROUP": "rg-dev",
                                   "AZURE_FUNCTION_NAME": "func-api-abc"},
                function_keys={"rg-dev/func-api-abc": host.function_key},
                tokens={f"api://{API_CLIENT_ID}/user_impersonation": "token-for-the-api"})

    result = offboard_all(world, fake_cli, "--apply")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"offboarded: {account} (" in result.stdout
    assert status_of(host, account) == "offboarded" and world.palette_accounts(account) == []


def test_a_wrong_function_key_is_named(host: LocalHost, world: World, tmp_path: Path) -> None:
    result = offboard_all(world, tmp_path, "--api", host.http_url, "--function-key", "not-the-key", "--no-sign-in")
    assert result.returncode == 1
    assert "GET /api/accounts answered 401" in result.stderr and "function key" in result.stderr
    assert "not-the-key" not in result.stdout + result.stderr


def test_without_an_api_or_azd_it_says_what_to_pass(world: World, tmp_path: Path) -> None:
    result = offboard_all(world, tmp_path, "--apply")
    assert result.returncode == 1 and "no API URL: pass --api URL" in result.stderr
