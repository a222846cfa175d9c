"""Suite-wide setup. Triton reads TRITON_INTERPRET when `triton` is first imported, and many
modules import it indirectly (tensordict -> torch internals), so the interpreter switch for the
kernel tests must be set here, before any test module is collected. It changes nothing for the
other tests: CPU tensors only reach Triton when RLX_KERNELS=triton."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
