// Choosing an ISA's kernel table at run time.
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace sparsebert {

// ISAs this CPU and OS can run, best first; "scalar" is always last.
std::vector<std::string> available_isas();

// SPARSEBERT_ISA when set (std::invalid_argument if it names an unknown ISA or one this CPU lacks), else the
// best available.
std::string default_isa();

// The kernel table of `isa`; std::invalid_argument if unknown or not runnable here.
const KernelTable& kernels_for(const std::string& isa);

}  // namespace sparsebert
