// rlmed/imaging/imaging.hpp — the whole imaging substrate (see docs/imaging.md for the
// conventions: (z, y, x) tensors, (x, y, z) geometric vectors, LPS millimetres, voxel-unit
// displacement fields with channel c along tensor axis c).
#pragma once

#include "rlmed/imaging/distance_transform.hpp"
#include "rlmed/imaging/image.hpp"
#include "rlmed/imaging/io/io.hpp"
#include "rlmed/imaging/kmeans.hpp"
#include "rlmed/imaging/metrics.hpp"
#include "rlmed/imaging/normalize.hpp"
#include "rlmed/imaging/orientation.hpp"
#include "rlmed/imaging/overlay.hpp"
#include "rlmed/imaging/patches.hpp"
#include "rlmed/imaging/phantom.hpp"
#include "rlmed/imaging/png.hpp"
#include "rlmed/imaging/pyramid.hpp"
#include "rlmed/imaging/resample.hpp"
#include "rlmed/imaging/warp.hpp"
