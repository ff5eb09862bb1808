"""The PR preview workflow (it cannot run here): parsed and checked for what makes it work."""
import yaml

from tests.pulumi_harness import ROOT


def test_preview_workflow_previews_the_homelab_stack_after_installing_dependencies():
    wf = yaml.safe_load((ROOT / ".github/workflows/preview.yml").read_text())
    triggers = wf.get("on") or wf.get(True)  # YAML 1.1 reads a bare `on` as True
    assert "pull_request" in triggers
    steps = wf["jobs"]["preview"]["steps"]
    pulumi_steps = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("pulumi/actions@")]
    assert len(pulumi_steps) == 1
    action = steps[pulumi_steps[0]]["with"]
    assert action["command"] == "preview" and action["stack-name"] == "homelab"
    assert action["comment-on-pr"] is True
    install = [i for i, s in enumerate(steps) if "pip install -r requirements.txt" in s.get("run", "")]
    assert install and install[0] < pulumi_steps[0], "dependencies must be installed before the preview"
    assert ".venv" in steps[install[0]]["run"]  # the virtualenv Pulumi.yaml names
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
