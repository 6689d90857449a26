"""The Dockerfile, built and run for real without a Docker engine: Debian's buildah builds
it (`--isolation chroot`) on a stand-in for `python:3.11-slim` (a minimal Debian with
Python 3.11 made by debootstrap, since the base image cannot be pulled here), then the
gateway is started from the built image's root filesystem as its user (uid 10001), and
answers `/healthz` and one proxied call; and the image's own ENTRYPOINT and CMD, on its
default config, pass its own HEALTHCHECK.

Needs root, buildah and debootstrap, and a few minutes: `.ci/run` installs them and sets
CALLGATE_REQUIRE_IMAGE_BUILD=1, which turns a skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.gateway import REPO
from tests.support.process import free_port, wait_until_up

BASE = "docker.io/library/python:3.11-slim"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd"
SLIM_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
SUPPORT_TOKEN = "demo-support-token"  # role support: GET /tickets on demo (default policy)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "building the image needs root (buildah --isolation chroot, debootstrap)"
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {tool})"
    return None


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CALLGATE_REQUIRE_IMAGE_BUILD") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    if _run(["buildah", "images", "--quiet", BASE], check=False).returncode != 0:
        _stand_in_base(tmp_path_factory.mktemp("rootfs"))
    image = f"localhost/callgate:test-{uuid.uuid4().hex[:8]}"
    # Docker's format, as `docker build` makes: OCI images have no HEALTHCHECK.
    build = ["buildah", "build", "--isolation", "chroot", "--pull=never", "--format", "docker"]
    _run([*build, "-t", image, str(REPO)])
    try:
        yield image
    finally:
        _run(["buildah", "rmi", "-f", image], check=False)


def _run(
    argv: list[str], check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _stand_in_base(rootfs: Path) -> None:
    """A minimal Debian with Python 3.11 under the Dockerfile's FROM name."""
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={PACKAGES}",
            "bookworm",
            str(rootfs),
            MIRROR,
        ]
    )
    # pip must reach the package index through this machine's CA bundle, and install
    # into the system Python as the real image's pip does.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    container = _run(["buildah", "from", "scratch"]).stdout.strip()
    try:
        mount = _run(["buildah", "mount", container]).stdout.strip()
        _run(["cp", "-a", f"{rootfs}/.", f"{mount}/"])
        _run(["buildah", "umount", container])
        _run(["buildah", "config", "--env", f"PATH={SLIM_PATH}", container])
        _run(["buildah", "commit", "--quiet", container, BASE])
    finally:
        _run(["buildah", "rm", container], check=False)


async def test_the_built_image_serves(built_image: str, start_upstream: Any) -> None:
    async def tickets(request: web.Request) -> web.Response:
        return web.json_response({"tickets": [], "path": request.path})

    upstream = web.Application()
    upstream.router.add_get("/tickets", tickets)
    upstream_url = await start_upstream(upstream)

    container = _run(["buildah", "from", built_image]).stdout.strip()
    mount = Path(_run(["buildah", "mount", container]).stdout.strip())
    port, admin = free_port(), free_port()
    (mount / "etc/callgate/test.yaml").write_text(
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin}}}\n"
        "policy: {path: /etc/callgate/policies}\n"
        "storage: {url: 'sqlite:////data/callgate.db'}\n"
        "audit: {url: 'sqlite:////data/audit.db'}\n"
        "agents:\n"
        "  - {id: support-bot, token_sha256: 87fd089ee94c1965c343faebfbff0e3689d571169a4abe77fbad0e8ce03a6aba, roles: [support]}\n"
        f"tools:\n  - {{name: demo, upstream: '{upstream_url}'}}\n"
    )
    gateway = await asyncio.create_subprocess_exec(
        "chroot", "--userspec=10001:10001", str(mount),
        "/usr/local/bin/callgate", "serve", "--config", "/etc/callgate/test.yaml",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await wait_until_up(
            f"http://127.0.0.1:{admin}/healthz",
            lambda: None if gateway.returncode is None else "the gateway exited",
            timeout_s=60,
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{admin}/healthz") as resp:
                assert await resp.json() == {"status": "ok"}
            headers = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}
            async with session.get(
                f"http://127.0.0.1:{port}/tools/demo/tickets", headers=headers
            ) as resp:
                assert resp.status == 200
                assert await resp.json() == {"tickets": [], "path": "/tickets"}
        assert (mount / "data/audit.db").exists(), "the audit log is on the data volume"
    finally:
        if gateway.returncode is None:
            gateway.terminate()
        output = (await gateway.communicate())[0].decode(errors="replace")
        _run(["buildah", "umount", container], check=False)
        _run(["buildah", "rm", container], check=False)
    assert gateway.returncode == 0, output[-3000:]


def test_the_image_runs_its_own_command_and_passes_its_health_check(built_image: str) -> None:
    """ENTRYPOINT and CMD as the image holds them (the default config on 0.0.0.0:8080 and
    8081), as its USER, then its HEALTHCHECK command, in a network namespace of their own
    so the fixed ports are free."""
    inspected = json.loads(_run(["buildah", "inspect", "--type", "image", built_image]).stdout)
    info = inspected["Docker"]["config"]
    command = [*info["Entrypoint"], *info["Cmd"]]
    assert command == ["callgate", "serve", "--config", "/etc/callgate/callgate.yaml"]
    kind, *health = info["Healthcheck"]["Test"]
    assert kind == "CMD"
    container = _run(["buildah", "from", built_image]).stdout.strip()
    mount = _run(["buildah", "mount", container]).stdout.strip()
    try:
        as_image = ["chroot", f"--userspec={info['User']}", mount, "env", "-i", *info["Env"]]
        script = "\n".join(
            [
                "ip link set lo up",
                f"{shlex.join(as_image + command)} > /dev/null 2>&1 &",
                "trap 'kill $!; wait $!' EXIT",
                "for i in $(seq 1 150); do",
                f"  if {shlex.join(as_image + health)}; then exit 0; fi",
                "  sleep 0.2",
                "done",
                "exit 1",
            ]
        )
        result = _run(["unshare", "--net", "sh", "-c", script], check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        _run(["buildah", "umount", container], check=False)
        _run(["buildah", "rm", container], check=False)
