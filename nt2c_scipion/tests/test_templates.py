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
    """A valid value of a template field's type (1 bool, 2 path, 3 int, 4 decimal, 6 folder)."""
    kind = str(field.getType())
    if kind == "2":
        path = folder / "model.pt"
        path.write_bytes(b"x")
        return str(path)
    if kind == "6":
        return str(folder)
    return {"1": "true", "3": "128", "4": "1.5"}.get(kind, field.getValue())


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
        runs = sorted(self.proj.getRuns(refresh=True), key=lambda p: p.getObjId())[-len(data):]
        self.assertEqual([p.getClassName() for p in runs], [item["object.className"] for item in data])
        original = json.loads(text[text.index("["):])
        for prot, item in zip(runs, original):
            for key, raw in item.items():
                if not (isinstance(raw, str) and raw.startswith("~") and raw.endswith("~")):
                    continue
                _, _, kind, alias = raw.strip("~").split("|")
                value = filled[alias][1]
                expected = {"1": True, "3": 128, "4": 1.5}.get(kind, value)
                self.assertEqual(getattr(prot, key).get(), expected, f"{prot.getClassName()}.{key}")
        del protocols
        return runs

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
