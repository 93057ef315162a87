"""The plugin's windows in pyworkflow's real Tk GUI on a virtual screen (Xvfb): every protocol
form, the wizards and the viewers open and draw within 2 s -- on a 4096² micrograph where the size
matters -- and screenshots show them drawn. Screenshots go to a temporary folder, or to the folder
in NT2C_SCREENSHOTS (``NT2C_SCREENSHOTS=docs/gui`` refreshes the README's)."""

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from .helpers import ONE_CLICK_TINY

RESPONSIVE_S = 2.0  # a window must be drawn this soon after the user asks for it
BIG = 4096  # px: a K3/Falcon micrograph (the whole one takes minutes to denoise on a CPU)


def start_xvfb():
    """(Xvfb process, display) once the server accepts connections; SkipTest where impossible.

    ``-displayfd`` lets Xvfb choose a free display and write its number only when it is ready: a
    socket file alone can appear before the server answers, and matplotlib then takes the machine
    for a headless one (a CI failure once)."""
    if not shutil.which("Xvfb"):
        raise unittest.SkipTest("Xvfb is not installed (apt-get install xvfb; .ci/run installs it)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("this Python has no tkinter (Scipion's GUI needs it)")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1100x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    number = b""
    deadline = time.time() + 30
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.time()))
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:  # timed out, or Xvfb exited
                proc.kill()
                raise unittest.SkipTest("Xvfb did not start within 30 s")
            number += chunk
    finally:
        os.close(read_end)
    display = f":{int(number)}"
    from matplotlib import _c_internal_utils

    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        while not _c_internal_utils.display_is_valid():  # matplotlib's own test of the display
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise unittest.SkipTest(f"Xvfb on {display} does not accept connections")
            time.sleep(0.1)
    finally:
        if previous is None:
            os.environ.pop("DISPLAY")
        else:
            os.environ["DISPLAY"] = previous
    return proc, display


class TestGuiWindows(BaseTest):
    @classmethod
    def setUpClass(cls):
        cls.xvfb, display = start_xvfb()
        cls._display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        from pyworkflow.gui.plotter import Plotter

        cls._backend = Plotter.backend
        Plotter.setBackend("TkAgg")
        cls.shots = Path(os.environ.get("NT2C_SCREENSHOTS") or tempfile.mkdtemp(prefix="nt2c-gui-")).resolve()
        cls.shots.mkdir(parents=True, exist_ok=True)
        cls.timings = {}  # what each window took [s], written next to the screenshots
        setupTestProject(cls)  # changes the working folder
        import pyworkflow.gui.project  # noqa: F401  (as Scipion's GUI: imported before form, or a circular import)
        from pyworkflow.gui import Window

        cls.main = Window("NT2C GUI test", None, minsize=(200, 100))  # the project window's stand-in
        cls.main.root.withdraw()
        cls._prepare_data()

    @classmethod
    def tearDownClass(cls):
        import matplotlib.pyplot as plt
        from pyworkflow.gui.plotter import Plotter

        plt.close("all")
        (cls.shots / "timings.json").write_text(json.dumps(cls.timings, indent=2, sort_keys=True) + "\n")
        cls.main.root.destroy()
        Plotter.setBackend(cls._backend or "Agg")
        cls.xvfb.kill()
        if cls._display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = cls._display

    @classmethod
    def _prepare_data(cls):
        """A 4096² micrograph (random noise: only its size matters here), the general model
        imported, a tiny one-click run and a denoise run of small simulated micrographs."""
        from pwem.protocols import ProtImportMicrographs

        from nt2c_core.data import APOFERRITIN, GENERAL_MODEL
        from nt2c_core.io import write_mrc
        from nt2c_core.simulate import Acquisition, SimulationConfig
        from nt2c_core.simulate.experimental import make_experimental_dataset
        from nt2c_scipion.protocols import ProtNT2C, ProtNT2CDenoise, ProtNT2CImportModel

        root = Path(cls.proj.getPath())
        big = root / "big"
        big.mkdir()
        rng = np.random.default_rng(0)
        write_mrc(big / "big.mrc", rng.normal(10, 3, (BIG, BIG)).astype(np.float32), 1.0)
        small = root / "small"
        make_experimental_dataset(
            [APOFERRITIN],
            SimulationConfig(Acquisition(pixel_size=2.5), size=(192, 160), particles=2, count=2, seed=4),
            small,
            progress=False,
        )

        def imported(folder, pixel):
            prot = cls.newProtocol(
                ProtImportMicrographs,
                filesPath=str(folder),
                filesPattern="*.mrc",
                samplingRate=pixel,
                voltage=300,
                sphericalAberration=2.7,
                amplitudeContrast=0.07,
            )
            return cls.launchProtocol(prot)

        cls.big_mics, cls.small_mics = imported(big, 1.0), imported(small / "raw", 2.5)
        cls.model = cls.launchProtocol(cls.newProtocol(ProtNT2CImportModel, modelFile=str(GENERAL_MODEL)))
        den = cls.newProtocol(ProtNT2CDenoise, useGeneralModel=True, streamingSleepOnWait=1)
        den.inputMicrographs.set(cls.small_mics)
        den.inputMicrographs.setExtended("outputMicrographs")
        cls.denoised = cls.launchProtocol(den)
        nt2c = cls.newProtocol(ProtNT2C, structureFile=str(APOFERRITIN), **ONE_CLICK_TINY)
        nt2c.inputMicrographs.set(cls.small_mics)
        nt2c.inputMicrographs.setExtended("outputMicrographs")
        cls.nt2c = cls.launchProtocol(nt2c)

    # --- helpers --------------------------------------------------------------------------
    def assertResponsive(self, what: str, seconds: float):
        self.timings[what] = round(seconds, 3)
        self.assertLess(seconds, RESPONSIVE_S, f"{what} took {seconds:.2f} s")

    def _shot(self, window, name: str) -> Path:
        """Screenshot of one Tk window (its area of the virtual screen, the window raised on top);
        asserts it is drawn (not one flat colour)."""
        window.lift()
        window.update()
        path = self.shots / f"{name}.png"
        area = f"{window.winfo_width()}x{window.winfo_height()}+{window.winfo_rootx()}+{window.winfo_rooty()}"
        shot = subprocess.run(
            ["import", "-window", "root", "-crop", area, "+repage", str(path)], capture_output=True, text=True
        )
        self.assertEqual(shot.returncode, 0, f"screenshot {name}: {shot.stderr}")
        from matplotlib.image import imread

        pixels = imread(str(path))
        self.assertGreater(float(np.std(pixels[..., :3])), 0.02, f"{name}: the window looks blank")
        return path

    def _form(self, protocol, name=None):
        """Open the protocol's form as the project window does; returns (window, seconds)."""
        from pyworkflow.gui.form import FormWindow

        start = time.perf_counter()
        window = FormWindow(f"Protocol Run: {protocol.getClassName()}", protocol, lambda *a, **k: None, self.main)
        window.root.deiconify()  # Window.show() without its mainloop
        window.root.wait_visibility()
        window.root.update()
        seconds = time.perf_counter() - start
        if name:
            window.root.geometry("900x800")
            window.root.update()
            self._shot(window.root, name)
        return window, seconds

    def _plotters(self, views, name=None):
        """Draw the plotters a viewer or wizard returned in their Tk windows (TkAgg), as Scipion
        shows them, and wait until the last one is on screen."""
        for view in views:
            view.show()
            canvas = view.getFigure().canvas
            widget = canvas.get_tk_widget()
            widget.wait_visibility()
            canvas.draw()
            widget.update()
        if name:
            self._shot(widget.winfo_toplevel(), name)

    # --- tests ----------------------------------------------------------------------------
    def test_every_protocol_form_opens_within_the_time(self):
        import nt2c_scipion.protocols as protocols

        self._form(self.newProtocol(protocols.ProtNT2CImportModel))[0].close()  # Tk and fonts warm up once
        shots = {"ProtNT2C": "form_one_click", "ProtNT2CDenoise": "form_denoise"}
        for name in protocols.__all__:
            prot = self.newProtocol(getattr(protocols, name))
            if hasattr(prot, "inputMicrographs"):
                prot.inputMicrographs.set(self.big_mics)
                prot.inputMicrographs.setExtended("outputMicrographs")
            window, seconds = self._form(prot, shots.get(name))
            window.close()
            self.assertResponsive(f"form {name}", seconds)

    def test_wizards_answer_within_the_time_on_a_4096_micrograph(self):
        from nt2c_scipion.protocols import ProtNT2C, ProtNT2CExtractNoise
        from nt2c_scipion.wizards import NT2CNoisePatchWizard, NT2CThresholdWizard

        noise = self.newProtocol(ProtNT2CExtractNoise, rule=1, threshold=0.3)
        noise.inputMicrographs.set(self.big_mics)
        noise.inputMicrographs.setExtended("outputMicrographs")
        noise.inputModel.set(self.model)
        noise.inputModel.setExtended("outputModel")
        window, _ = self._form(noise)
        start = time.perf_counter()
        plotter = NT2CThresholdWizard().show(window)
        self._plotters([plotter], "wizard_threshold")
        seconds = time.perf_counter() - start
        window.close()
        self.assertResponsive(f"wizard SSIM threshold preview, {BIG}² micrograph", seconds)

        from nt2c_core.data import APOFERRITIN

        one_click = self.newProtocol(ProtNT2C, structureFile=str(APOFERRITIN), noisePatch=999)
        one_click.inputMicrographs.set(self.big_mics)
        one_click.inputMicrographs.setExtended("outputMicrographs")
        window, _ = self._form(one_click)
        start = time.perf_counter()
        NT2CNoisePatchWizard().show(window)
        window.root.update()
        seconds = time.perf_counter() - start
        self.assertEqual(int(window.widgetDict["noisePatch"].get()) % 32, 0)
        self.assertNotEqual(int(window.widgetDict["noisePatch"].get()), 999)
        window.close()
        self.assertResponsive("wizard noise patch size", seconds)

    def test_viewers_draw_within_the_time(self):
        from nt2c_scipion.viewers.viewer_denoise import NT2CDenoiseViewer, draw_comparison
        from nt2c_scipion.viewers.viewer_training import NT2CTrainingViewer, page_of

        cases = [
            (NT2CDenoiseViewer, self.denoised, ["doShowCompare"]),
            (NT2CTrainingViewer, self.nt2c, ["doShowLosses", "doShowImages", "doShowChoice", "doShowCompare"]),
        ]
        for viewer_class, protocol, buttons in cases:
            viewer = viewer_class(project=self.proj, protocol=protocol)
            viewer.setProtocol(protocol)
            for button in buttons:
                start = time.perf_counter()
                views = viewer._getVisualizeDict()[button](button)
                self._plotters(views, f"viewer_{viewer_class.__name__}_{button}")
                seconds = time.perf_counter() - start
                self.assertResponsive(f"viewer {viewer_class.__name__} {button}", seconds)

        # what the denoise viewer draws for a 4096² micrograph once read (binned overview, crops)
        from pwem.viewers import EmPlotter

        rng = np.random.default_rng(1)
        raw, den = rng.normal(size=(BIG, BIG)).astype(np.float32), rng.normal(size=(BIG, BIG)).astype(np.float32)
        start = time.perf_counter()
        plotter = EmPlotter(x=2, y=3, windowTitle="NT2C: 4096² micrograph")
        axes = [plotter.createSubPlot("", "", "") for _ in range(6)]
        draw_comparison([axes[0], axes[1], axes[3], axes[4], axes[2], axes[5]], raw, den)
        self._plotters([plotter])
        seconds = time.perf_counter() - start
        self.assertResponsive(f"viewer raw vs denoised panels, {BIG}² micrograph", seconds)
        self.assertLessEqual(max(axes[0].images[0].get_array().shape), 512)

        # hundreds of micrographs: one page of figures per window
        figures = {f"overlay {i}": Path(f"{i}.png") for i in range(300)}
        page, pages = page_of(figures, 2)
        self.assertEqual((pages, list(page)), (50, [f"overlay {i}" for i in range(6, 12)]))
        self.assertEqual(page_of(figures, 99)[0], {f"overlay {i}": Path(f"{i}.png") for i in range(294, 300)})
