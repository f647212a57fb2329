// The scalar kernels (baseline ISA): fallback for any x86-64 CPU and the oracle for the SIMD kernels. They are
// written independently of the SIMD templates in kernels/simd/ so that the two can check each other.
#pragma once

#include "kernels/kernels.h"

namespace sparsebert {
namespace ref {
#include "kernels/kernel_decls.inl"
}  // namespace ref
}  // namespace sparsebert
