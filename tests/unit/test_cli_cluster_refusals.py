"""Commands that would edit one replica's cache file in cluster mode are refused with a clear
message (exit 2), and leave the file alone: the state lives in the state topic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from notifier.cli.main import main

CID = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"


def _config(tmp_path: Path) -> Path:
    data = {
        "source": {"base_url": "http://127.0.0.1:1", "allow_insecure_http": True},
        "credentials": [{"name": "main", "access_token": "x"}],
        "state": {"path": str(tmp_path / "cache.db")},
        "subscriptions": [{"name": "one", "credential": "main", "container_id": CID,
                           "sinks": ["hooks"]}],
        "sinks": [{"name": "hooks", "type": "webhook", "url": "http://127.0.0.1:1/h",
                   "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                   "allow_insecure_http": True}],
        "cluster": {"bootstrap_servers": "127.0.0.1:1", "group": "g", "state_topic": "g.state"},
    }
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("argv", "fragment"), [
    (["state", "forget", "one", "--force"], "notifier state forget: not available in cluster"),
    (["state", "rename", "one", "two"], "notifier state rename: not available in cluster"),
    (["webhooks", "dlq", "replay"], "dlq replay and redeliver are not available in cluster"),
    (["webhooks", "redeliver", "--sink", "hooks", "--since", "1h"], "not available in cluster"),
])
def test_cache_editing_commands_are_refused_in_cluster_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        fragment: str) -> None:
    config = _config(tmp_path)
    group, *rest = argv
    assert main([group, "--config", str(config), *rest]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "state topic" in err
    assert not (tmp_path / "cache.db").exists(), "the cache file is never touched"
