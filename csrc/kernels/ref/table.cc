#include "kernels/isa.h"
#include "kernels/ref/kernels_ref.h"

namespace sparsebert {
namespace ref {

KernelTable table() {
  KernelTable t;
#define SPARSEBERT_SCALAR_ENTRY(type, name) t.name = name;
  SPARSEBERT_KERNELS(SPARSEBERT_SCALAR_ENTRY)
#undef SPARSEBERT_SCALAR_ENTRY
  return t;
}

}  // namespace ref
}  // namespace sparsebert
