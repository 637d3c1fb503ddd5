#pragma once
/// \file Umbrella header of ditcache: everything a C++ application needs.

#include "ditcache/cache/context.h"
#include "ditcache/cache/policies.h"
#include "ditcache/cache/policy.h"
#include "ditcache/cache/site.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"
#include "ditcache/flops.h"
#include "ditcache/image.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"
#include "ditcache/log.h"
#include "ditcache/models/dit.h"
#include "ditcache/models/vae.h"
#include "ditcache/pipeline.h"
#include "ditcache/sampling/gaussian_diffusion.h"
