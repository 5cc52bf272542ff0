# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

# llama.cpp is compiled for this CPU's vector extensions, but never with AMX: -march=native turns
# on AMX tiles where the CPU lists them, and a VM that lists them without granting them dies of
# SIGILL (seen on a 2-core Xeon). So: GGML_NATIVE off, each extension the CPU has switched on.
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
ggml_flag = -DGGML_$(1)=$(if $(filter $(2),$(CPU_FLAGS)),ON,OFF)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	$(call ggml_flag,AVX,avx) $(call ggml_flag,AVX2,avx2) $(call ggml_flag,FMA,fma) \
	$(call ggml_flag,F16C,f16c) $(call ggml_flag,BMI2,bmi2) $(call ggml_flag,AVX_VNNI,avx_vnni) \
	$(call ggml_flag,AVX512,avx512bw) $(call ggml_flag,AVX512_VNNI,avx512_vnni) \
	$(call ggml_flag,AVX512_VBMI,avx512vbmi) $(call ggml_flag,AVX512_BF16,avx512_bf16)

install: $(STAMP)

# torch is pinned first so the CPU build already on the machine is used (an unpinned torch
# pulls several GB of CUDA packages); llama-cpp-python compiles once (~5 min) and pip caches it
# (a wheel pip cached from an earlier -march=native build is used as is: `pip cache remove llama_cpp_python`).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q 'llama-cpp-python[server]>=0.3.2'
	$(PY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/logdistill demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
