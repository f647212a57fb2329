// One kernel table per ISA. Only dispatch.cc calls these, and only after checking the CPU can run that ISA.
#pragma once

#include "kernels/kernels.h"

namespace sparsebert {
namespace ref { KernelTable table(); }
namespace avx2 { KernelTable table(); }
namespace avx512 { KernelTable table(); }
}  // namespace sparsebert
