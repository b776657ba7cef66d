import importlib.metadata
import subprocess
import sys
import sysconfig


def test_open_clip_imports_and_builds_a_model_in_a_fresh_process():
    code = ("import curate, open_clip, torch\n"
            "model = open_clip.create_model('RN50', pretrained=None)\n"
            "print(type(model).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "CLIP"


def test_torchvision_transforms_work_after_the_fix():
    code = ("import curate, torchvision.transforms as T\n"
            "from PIL import Image\n"
            "print(tuple(T.ToTensor()(T.Resize(32)(Image.new('RGB', (64, 48)))).shape))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(3, 32, 42)"


def test_tools_that_import_torchvision_first_work_in_the_installed_environment():
    # `accelerate launch` imports timm (and so torchvision) before any cleanroom code runs.
    result = subprocess.run([sys.executable, "-c", "import timm, torchvision; print('ok')"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_pth_file_is_installed_with_the_package():
    # setup.py ships it in editable installs and wheels alike: no install step writes it by hand.
    # (Looked up in site-packages: the checkout's own egg-info, on the path in tests, lists no installed files.)
    (installed,) = importlib.metadata.distributions(name="cleanroom", path=[sysconfig.get_paths()["purelib"]])
    assert "cleanroom_torchvision_cpu.pth" in {str(f) for f in installed.files}
