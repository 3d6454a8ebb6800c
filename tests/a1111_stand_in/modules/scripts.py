"""Follows modules/scripts.py of A1111 1.10.1: the Script base, AlwaysVisible, scripts_data, and a
runner calling always-on hooks with the script's argument slice, printing (not raising) their errors."""
import collections
import importlib.util
import os

from modules import errors

AlwaysVisible = object()

ScriptClassData = collections.namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []


class Script:
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def elem_id(self, item_id):
        tab = "img2img" if self.is_img2img else "txt2img"
        title = "".join(ch for ch in self.title().lower().replace(" ", "_") if ch.isalnum() or ch == "_")
        return f"script_{tab}_{title}_{item_id}"

    def setup(self, p, *args): pass
    def before_process(self, p, *args): pass
    def process(self, p, *args): pass
    def before_process_batch(self, p, *args, **kwargs): pass
    def process_batch(self, p, *args, **kwargs): pass
    def process_before_every_sampling(self, p, *args, **kwargs): pass
    def before_hr(self, p, *args): pass
    def postprocess(self, p, processed, *args): pass


def load_module(path):
    """script_loading.load_module: the module is named after the file's basename."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(path, basedir):
    module = load_module(path)
    for value in module.__dict__.values():
        if isinstance(value, type) and issubclass(value, Script) and value is not Script:
            scripts_data.append(ScriptClassData(value, path, basedir, module))
    return module


class ScriptRunner:
    def __init__(self):
        self.alwayson_scripts = []
        self.inputs = [None]
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []

    def add(self, script, is_img2img=False, controls=None):
        """initialize_scripts + create_script_ui for one script (controls: the values ui() returned,
        or None to take each Param default, as the API's default args do)."""
        script.is_img2img = is_img2img
        script.is_txt2img = not is_img2img
        if script.show(is_img2img) is not AlwaysVisible:
            return False
        script.alwayson = True
        script.name = script.title().lower()
        script.args_from = len(self.inputs)
        self.inputs += list(controls)
        script.args_to = len(self.inputs)
        self.alwayson_scripts.append(script)
        self.title_map[script.title().lower()] = script
        return True

    def _each(self, hook, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            args = p.script_args[script.args_from:script.args_to]
            try:
                getattr(script, hook)(p, *extra, *args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._each("before_hr", p)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)
