import os
import tempfile
import warnings

import pytest

# Stand-ins are built once per test session into a private cache; real weights are never
# looked for, so a developer's Hugging Face cache cannot change what the suite tests.
os.environ.setdefault("COURSE_CACHE", os.path.join(tempfile.gettempdir(), "series7-test-cache"))
os.environ.setdefault("COURSE_STANDIN_ONLY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(autouse=True)
def _quiet_torch():
    import torch

    torch.manual_seed(0)
    yield
