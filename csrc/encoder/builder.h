// Building an Encoder from a config and named weights: the config is parsed by encoder_spec.h, every weight the
// config needs must be given with its exact shape, and nothing else may be.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "encoder/encoder.h"
#include "encoder/encoder_spec.h"
#include "ops/packed_linear.h"

namespace sparsebert {

// A float32 array the caller owns until build_encoder returns (the encoder keeps copies).
struct ArrayView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
};

struct EncoderWeights {
  std::map<std::string, ArrayView> arrays;
  std::map<std::string, std::shared_ptr<const PackedLinear>> linears;
};

// std::invalid_argument naming the problem: a bad config, num_threads outside [1, kMaxThreads], or a missing,
// unexpected, misshapen or wrong-kind weight; an unknown or unavailable isa (kernels/dispatch.h).
std::unique_ptr<Encoder> build_encoder(const ConfigMap& config, const EncoderWeights& weights, int num_threads,
                                       const std::string& isa, const EncoderOptions& options);

}  // namespace sparsebert
