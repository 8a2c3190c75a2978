# Compiles the NVIDIA-only paths of the tensor-core kernels (inline PTX, never built by PoCL,
# whose tests run them emulated) with clang's OpenCL front end for the NVPTX target, syntax and
# semantics only, so that an OpenCL C error in them fails CI instead of a run on a GPU.
#   cmake -DCLANG=<clang> -DCL_DIR=<cl/> -DWORK=<scratch dir> -P nvptx_syntax.cmake
# Each configuration: "<stage>|<prelude files>|<options>", as src/program.c assembles them.
set(configs
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=2 -DHEAD_DIM=128 -DWG_BULK=2 -DMMA_LAZY_RESCALE=12"
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=2 -DHEAD_DIM=128 -DWG_BULK=2 -DWG_SPLIT=2"
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=1 -DHEAD_DIM=64 -DWG_BULK=1 -DWG_SPLIT=2 -DNABLA_DENSE=1"
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=1 -DHEAD_DIM=64 -DWG_BULK=2 -DMMA_QPW=2"
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=2 -DHEAD_DIM=128 -DWG_BULK=1 -DNABLA_DENSE=1"
  "attention_wgmma|common mma wgmma|-DNABLA_DTYPE=1 -DHEAD_DIM=128 -DWG_BULK=0 -DMMA_QPW=2"
  "probe_wgmma|common mma wgmma|-DNABLA_DTYPE=2"
  "attention_mma|common mma|-DNABLA_DTYPE=2 -DHEAD_DIM=128 -DMMA_SMEM_PTX=1"
  "attention_mma|common mma|-DNABLA_DTYPE=1 -DHEAD_DIM=64 -DMMA_SMEM_PTX=0 -DMMA_QPW=2"
  "map_mma|common mma|-DNABLA_DTYPE=2 -DMAP_D=128"
  "probe_mma|common|-DPROBE_SMEM=1"
  "probe_mma|common|-DPROBE_SMEM=0")
file(MAKE_DIRECTORY ${WORK})
# clang's builtin header leaves out vload_half and vload_half8 on a private pointer for this
# target; the kernels use them on fp16 storage (NVIDIA's compiler has them, as OpenCL 1.2 says).
file(WRITE ${WORK}/shim.h
  "float __attribute__((overloadable)) vload_half(size_t offset, const __private half *p);\n"
  "float8 __attribute__((overloadable)) vload_half8(size_t offset, const __private half *p);\n")
set(failed 0)
foreach(config IN LISTS configs)
  string(REPLACE "|" ";" parts "${config}")
  list(GET parts 0 stage)
  list(GET parts 1 prelude)
  list(GET parts 2 options)
  separate_arguments(prelude)
  separate_arguments(options)
  set(text "")
  foreach(part IN LISTS prelude ITEMS ${stage})
    file(READ ${CL_DIR}/${part}.cl part_text)
    string(APPEND text "${part_text}\n")
  endforeach()
  file(WRITE ${WORK}/${stage}.cl "${text}")
  execute_process(
    COMMAND ${CLANG} -x cl -cl-std=CL1.2 -target nvptx64-nvidia-nvcl -fsyntax-only -Xclang -finclude-default-header
            -include ${WORK}/shim.h -Dasm=__asm__
            -Werror=implicit-function-declaration ${options} ${WORK}/${stage}.cl
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(STATUS "ok      ${stage} ${options}")
  else()
    message(STATUS "FAILED  ${stage} ${options}\n${err}")
    math(EXPR failed "${failed} + 1")
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "${failed} kernel configuration(s) do not compile for NVPTX")
endif()
