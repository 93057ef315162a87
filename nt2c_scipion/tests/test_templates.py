"""The workflow templates as a user's choice in Scipion takes them: environment variables
substituted first (scipion-app's kickoff), every user field filled through its alias, the workflow
imported into a project, every protocol class resolved and every filled parameter of the right
type. (Running the denoise template end to end is in test_protocols.py.)"""

import json
from pathlib import Path

from pyworkflow.template import LocalTemplate
from pyworkflow.tests import BaseTest, setupTestProject

TEMPLATES = Path(__file__).resolve().parents[2] / "nt2c_scipion" / "templates"


def fill_value(field, folder: Path) -> str:
    """A valid value of a template field's type (2 path, 3 int, 4 decimal, 6 folder); a 0/1 switch
    (an integer field standing for a boolean) is turned on."""
    kind = str(field.getType())
    if kind == "2":
        path = folder / "model.pt"
        path.write_bytes(b"x")
        return str(path)
    if kind == "6":
        return str(folder)
    if kind == "3" and field.getValue() in ("0", "1"):
        return "1"
    return {"3": "128", "4": "1.5"}.get(kind, field.getValue())


def expected_value(param, kind: str, value: str):
    """What the protocol's parameter holds after pyworkflow loads the filled value."""
    from pyworkflow.object import Boolean

    if isinstance(param, Boolean):
        return value.strip().lower() in ("1", "true")
    return {"3": int, "4": float}.get(kind, str)(value)


def shell_round_trip(args: list) -> list:
    """The arguments a command gets after scipion-app's kickoff creates a project: it runs
    ``python -m scipion python create.py NAME WORKFLOW - 'COMMENT'`` through os.system (single
    quotes escaped), and the scipion launcher re-joins its arguments in double quotes for a second
    shell. Both shells are real (bash)."""
    import subprocess
    import sys

    comment = args[-1].replace("'", "'\"'\"'")
    first = " ".join(args[:-1]) + f" '{comment}'"
    printer = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    script = (
        f'{printer} {first} | {sys.executable} -c "import json, subprocess, sys; a = json.loads(sys.stdin.read()); '
        f'subprocess.run(\\"{printer} \\" + \' \'.join(\'\\"%s\\"\' % x for x in a), shell=True)"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestTemplates(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def _check(self, name: str, tmp: Path) -> list:
        text = (TEMPLATES / f"{name}.json.template").read_text()
        assert "%(" not in text, "environment-variable fields crash scipion-app's template kickoff"
        template = LocalTemplate("nt2c_scipion", str(TEMPLATES / f"{name}.json.template"))
        template.replaceEnvVariables()
        template.parseContent()
        fields = template.getParams()
        self.assertEqual(len(fields), text.count("~") // 2, "two user fields share a title: one would stay unfilled")
        aliases = [f.getAlias() for f in fields.values()]
        self.assertEqual(len(aliases), len(set(aliases)))
        filled = {}
        for field in fields.values():
            value = fill_value(field, tmp)
            self.assertEqual(template.setParamValue(field.getAlias(), value), 1, field.getTitle())
            filled[field.getAlias()] = (field.getType(), value)
        path = template.createTemplateFile()
        data = json.loads(Path(path).read_text())
        self.assertFalse([v for item in data for v in item.values() if isinstance(v, str) and "~" in v])
        protocols = self.proj.loadProtocols(path)
        runs = sorted(self.proj.getRuns(refresh=True), key=lambda p: p.getObjId())[-len(data) :]
        self.assertEqual([p.getClassName() for p in runs], [item["object.className"] for item in data])
        original = json.loads(text[text.index("[") :])
        for prot, item in zip(runs, original):
            for key, raw in item.items():
                if not (isinstance(raw, str) and raw.startswith("~") and raw.endswith("~")):
                    continue
                _, _, kind, alias = raw.strip("~").split("|")
                value = filled[alias][1]
                param = getattr(prot, key)
                self.assertEqual(param.get(), expected_value(param, kind, value), f"{prot.getClassName()}.{key}")
        del protocols
        return runs

    def test_every_default_is_one_the_kickoff_dialog_accepts(self):
        """scipion-app's kickoff shows a boolean field (type 1) as a check box that returns Yes/No,
        which its own validation refuses: the templates have none (0/1 integer switches instead);
        every other default passes scipion-app's validation as the dialog submits it."""
        from pyworkflow.template import TemplateParam

        self.assertTrue(TemplateParam(1, "x", "No", 1).validate(), "scipion-app accepts Yes/No booleans now")
        for path in sorted(TEMPLATES.glob("*.json.template")):
            template = LocalTemplate("nt2c_scipion", str(path))
            template.replaceEnvVariables()
            template.parseContent()
            for field in template.getParams().values():
                self.assertNotEqual(field.getType(), 1, f"{path.name}: {field.getTitle()} is a boolean field")
                if field.getType() in (0, 3, 4):
                    self.assertIsNone(field.validate(), f"{path.name}: {field.getTitle()} = {field.getValue()}")

    def test_descriptions_survive_the_project_creation_command(self):
        """The description becomes the project comment on a command line run through two shells:
        quotes, $ or backslashes in it used to break project creation ('Incorrect number of input
        parameters')."""
        for path in sorted(TEMPLATES.glob("*.json.template")):
            description = LocalTemplate("nt2c_scipion", str(path)).description
            self.assertNotIn("  ", description.strip(), f"{path.name}: description lines must end with a space")
            args = ["create.py", "project-name", "/tmp/workflow.json", "-", description]
            self.assertEqual(shell_round_trip(args), args, path.name)

    def test_general_model_needs_no_path(self):
        """The denoise templates denoise with the shipped general model: no model file field."""
        for path in sorted(TEMPLATES.glob("*.json.template")):
            text = path.read_text()
            data = json.loads(text[text.index("[") :])
            denoise = [item for item in data if item["object.className"] == "ProtNT2CDenoise"]
            self.assertEqual(len(denoise), 1, path.name)
            self.assertIs(denoise[0].get("useGeneralModel"), True, path.name)
            self.assertNotIn("ProtNT2CImportModel", [item["object.className"] for item in data])
            self.assertEqual(len({item["object.id"] for item in data}), len(data), path.name)
            # pyworkflow's schedule script schedules a protocol once per root it descends from: one root
            roots = [
                item
                for item in data
                if not any(isinstance(v, str) and v.split(".")[0].isdigit() and "." in v for v in item.values())
            ]
            self.assertEqual([r["object.className"] for r in roots], ["ProtImportMicrographs"], path.name)

    def test_denoise_template(self):
        tmp = Path(self.proj.getPath()) / "denoise_inputs"
        tmp.mkdir()
        runs = self._check("nt2c_denoise", tmp)
        self.assertEqual(runs[-1].getClassName(), "ProtNT2CDenoise")

    def test_facility_template(self):
        try:
            import relion  # noqa: F401
        except ImportError:
            self.skipTest("scipion-em-relion (the test extra) is not installed")
        tmp = Path(self.proj.getPath()) / "facility_inputs"
        tmp.mkdir()
        runs = self._check("nt2c_facility_pick_extract", tmp)
        pick, extract = runs[-2], runs[-1]
        self.assertEqual(pick.boxSize.get(), 128)
        self.assertEqual(extract.boxSize.get(), 128)
