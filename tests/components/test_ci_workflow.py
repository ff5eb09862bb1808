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


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github/workflows/preview.yml").read_text())


def test_every_pull_request_runs_the_test_suite():
    wf = workflow()
    triggers = wf.get("on") or wf.get(True)
    assert "pull_request" in triggers
    test = wf["jobs"]["test"]
    assert "if" not in test  # no condition: forks included, no secrets needed
    assert any(step.get("run", "").strip() == "make test" for step in test["steps"])
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme


def test_preview_skips_cleanly_without_secrets():
    """A fork's pull request has no secrets: every preview step is conditioned on the check step, which
    says why it skips instead of failing on a missing token."""
    steps = workflow()["jobs"]["preview"]["steps"]
    gate = steps[0]
    assert gate["id"] == "secrets" and "::notice" in gate["run"] and "available=false" in gate["run"]
    for step in steps[1:]:
        assert step.get("if") == "steps.secrets.outputs.available == 'true'", step


def test_the_readme_lists_every_secret_the_workflow_reads():
    import re
    text = (ROOT / ".github/workflows/preview.yml").read_text()
    used = set(re.findall(r"secrets\.([A-Z_]+)", text)) - {"GITHUB_TOKEN"}
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### CI"):]
    section = section[:section.index("\n## ")]
    assert used and all(f"`{name}`" in section for name in used), used
