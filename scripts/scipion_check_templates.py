"""Part of `make scipion-check` (run by `scipion3 python`): every nt2c template as scipion-app's
template chooser takes it -- found by TemplateList.addPluginTemplates, fields filled through
kickoff.assignAllParams with alias=value arguments, the project created by
kickoff.createProjectFromWorkflow (the launcher's own command line) -- then the denoise template
scheduled with pyworkflow's schedule script on one micrograph; its output and run log checked."""

import os
import subprocess
import sys
import time
from pathlib import Path

from pyworkflow.project import Manager
from pyworkflow.template import TemplateList
from scipion.scripts import kickoff

DATA = Path(os.environ["SCIPION_CHECK_DATA"])
VALUES = {
    "filesPath": str(DATA / "mics"),
    "filesPattern": "*.mrc",
    "samplingRate": "2.0",
    "voltage": "300",
    "sphericalAberration": "2.7",
    "amplitudeContrast": "0.07",
    "dataStreaming": "0",
    "timeout": "30s",
    "fileTimeout": "1",
    "streamingSleepOnWait": "2",
    "pickBoxSize": "128",
    "minDiameter": "100",
    "maxDiameter": "150",
    "extractBoxSize": "128",
}


def fail(message: str) -> None:
    print(f"scipion-check: FAILED: {message}")
    sys.exit(1)


templates = TemplateList()
templates.addPluginTemplates()
ours = [t for t in templates.templates if t.source == "nt2c_scipion"]
print("templates found by scipion-app:", ", ".join(t.getObjId() for t in ours))
if {t.name for t in ours} != {"nt2c_denoise", "nt2c_facility_pick_extract"}:
    fail(f"the chooser finds {[t.name for t in ours]}")
manager = Manager()
for template in ours:
    template.replaceEnvVariables()
    template.parseContent()
    args = [f"{f.getAlias()}={VALUES[f.getAlias()]}" for f in template.params.values()]
    if not kickoff.assignAllParams(args, template):
        fail(f"{template.getObjId()}: fields left unfilled by {args}")
    template.projectName = f"nt2ccheck_{template.name}_{int(time.time())}"
    workflow = kickoff.createTemplateFile(template)
    kickoff.createProjectFromWorkflow(
        workflow, template.projectName, args + ["--noschedule", "--nogui"], template.description
    )
    if not manager.hasProject(template.projectName):
        fail(f"{template.getObjId()}: kickoff did not create the project (see its message above)")
    project = manager.loadProject(template.projectName)
    runs = project.getRuns()
    print(
        f"{template.getObjId()}: project {template.projectName} with {len(runs)} protocols: "
        + ", ".join(r.getClassName() for r in runs)
    )
    text = Path(template.templatePath).read_text()
    expected = text.count('"object.className"')
    if len(runs) != expected:
        fail(f"{template.getObjId()}: {len(runs)} protocols in the project, the template has {expected}")
    if template.name != "nt2c_denoise":
        continue
    import pyworkflow

    script = os.path.join(os.path.dirname(pyworkflow.__file__), "project", "scripts", "schedule.py")
    subprocess.run([sys.executable, script, template.projectName], check=True)
    deadline = time.time() + 900
    while time.time() < deadline:
        project = manager.loadProject(template.projectName)
        runs = project.getRuns(refresh=True)
        states = {r.getObjLabel(): r.getStatusMessage() for r in runs}
        if any(r.isFailed() for r in runs):
            fail(f"a protocol failed: {states}")
        if all(r.isFinished() for r in runs):
            break
        time.sleep(10)
    else:
        fail(f"not finished after 15 min: {states}")
    den = next(r for r in runs if r.getClassName() == "ProtNT2CDenoise")
    size = den.outputMicrographs.getSize()
    log = Path(den.getLogPaths()[0]).read_text(errors="replace")
    print(f"denoised {size} micrograph(s); summary: {' | '.join(den.summary())}")
    print("run.stdout lines from NT2C:")
    print(
        "\n".join("    " + line for line in log.splitlines() if "nt2c" in line.lower() or "model" in line.lower())[
            -3000:
        ]
    )
    for needed in (
        "NT2C denoise: shipped general model",
        "device cpu",
        "torch threads",
        "denoised in",
        "NT2C denoise: output outputMicrographs: ",
    ):
        if needed not in log:
            fail(f"the denoise run's log has no line with {needed!r}")
    if "Cannot get information about MPI/threads" in log:
        fail("pyworkflow could not read the protocol's threads (its start-up warning is in the log)")
    if size != 1:
        fail(f"the denoise protocol gave {size} micrographs, expected 1")
    if sum(1 for s in project.getRuns() if s.getClassName() == "ProtNT2CDenoise") != 1:
        fail("the denoise protocol is in the project more than once")
print("templates: ok")
