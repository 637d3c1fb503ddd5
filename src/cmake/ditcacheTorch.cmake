# Torch from pip's CUDA wheel: libtorch_cuda.so finds its NCCL/cuDNN/cuBLAS through an $ORIGIN
# rpath that GNU ld does not follow at link time, so it would link against another copy (e.g. the
# CUDA toolkit's older libnccl). Point the linker at the wheel's own folders. No-op elsewhere.
function(ditcache_torch_link_dirs out_var)
  set(dirs "")
  if(TORCH_INSTALL_PREFIX)
    file(GLOB dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
  endif()
  set(${out_var} "${dirs}" PARENT_SCOPE)
endfunction()

# Torch's pip wheel ships fmt 12 headers in its include folder, which would shadow the system fmt
# that spdlog (and our link to fmt::fmt) are built against. Our own targets see the system fmt and
# spdlog first, through a folder of links placed ahead of Torch's include path.
function(ditcache_prefer_system_fmt target)
  set(dir "${PROJECT_BINARY_DIR}/system-fmt-include")
  if(NOT EXISTS "${dir}")
    get_target_property(fmt_inc fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
    get_target_property(spd_inc spdlog::spdlog INTERFACE_INCLUDE_DIRECTORIES)
    list(GET fmt_inc 0 fmt_inc)
    list(GET spd_inc 0 spd_inc)
    file(MAKE_DIRECTORY "${dir}")
    file(CREATE_LINK "${fmt_inc}/fmt" "${dir}/fmt" SYMBOLIC)
    file(CREATE_LINK "${spd_inc}/spdlog" "${dir}/spdlog" SYMBOLIC)
  endif()
  target_include_directories(${target} BEFORE PRIVATE "${dir}")
endfunction()
