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
