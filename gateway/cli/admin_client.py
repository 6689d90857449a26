"""The admin API from a terminal, for `callgate approvals` and `callgate switch`.

The admin URL and the approver token come from `--url`/`--token` or the environment
(`CALLGATE_ADMIN_URL`, `CALLGATE_APPROVER_TOKEN`), so the token stays out of shell history.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import click


def connection(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--token",
        envvar="CALLGATE_APPROVER_TOKEN",
        required=True,
        help="approver bearer token [env CALLGATE_APPROVER_TOKEN]",
    )(func)
    return click.option(
        "--url",
        envvar="CALLGATE_ADMIN_URL",
        default="http://127.0.0.1:8081",
        show_default=True,
        help="the admin listener [env CALLGATE_ADMIN_URL]",
    )(func)


def call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = error.reason
        click.echo(f"error: {error.code} {message}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as error:
        click.echo(f"cannot reach {url}: {getattr(error, 'reason', error)}", err=True)
        sys.exit(2)
