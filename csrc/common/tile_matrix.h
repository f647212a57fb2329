// Activations inside the engine: F features x T tokens, feature-major, in tiles of kTileTokens tokens.
//
// Tile i is a contiguous [rows][kTileTokens] block (rows = F rounded up to 4, the padding rows zero, so 4-block
// kernels may read a whole last block). Token t is lane t % kTileTokens of tile t / kTileTokens. Lanes past T in
// the last tile hold stale but finite values; kernels compute on them and nothing reads them back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/aligned_buffer.h"
#include "kernels/kernels.h"

namespace sparsebert {

constexpr int32_t kTileTokens = 64;
static_assert(kTileTokens == kSpecialisedStride, "the kernels' fast path is the tile's row stride");

// Consecutive tiles of a TileMatrix, borrowed: what an op reads or writes in place (a group of tiles of a larger
// matrix, say) without owning or copying it. Like a span, a const view may still write through tile().
class TileView {
 public:
  TileView(float* data, int32_t features, int32_t rows, int32_t tokens)
      : data_(data), features_(features), rows_(rows), tokens_(tokens) {}

  int32_t features() const { return features_; }
  int32_t tokens() const { return tokens_; }
  int32_t num_tiles() const { return (tokens_ + kTileTokens - 1) / kTileTokens; }
  int32_t tokens_in_tile(int32_t i) const {
    const int32_t rest = tokens_ - i * kTileTokens;
    return rest < kTileTokens ? rest : kTileTokens;
  }
  float* tile(int32_t i) const { return data_ + static_cast<int64_t>(i) * rows_ * kTileTokens; }

 private:
  float* data_;
  int32_t features_, rows_, tokens_;
};

class TileMatrix {
 public:
  TileMatrix() = default;
  TileMatrix(int32_t features, int32_t tokens) { resize(features, tokens); }

  // Keeps the allocation when it is large enough, so repeated calls with one shape allocate nothing. The row
  // count may change from call to call (layers of different widths share a matrix): the padding rows, which
  // 4-block kernels read, are zeroed for the new shape; the real rows are the caller's to write.
  void resize(int32_t features, int32_t tokens) {
    const int32_t rows = (features + 3) / 4 * 4;
    const int32_t tiles = (tokens + kTileTokens - 1) / kTileTokens;
    data_.ensure(static_cast<std::size_t>(rows) * kTileTokens * tiles);
    features_ = features;
    rows_ = rows;
    tokens_ = tokens;
    if (rows != features)
      for (int32_t t = 0; t < tiles; ++t)
        std::memset(tile(t) + static_cast<int64_t>(features) * kTileTokens, 0,
                    static_cast<std::size_t>(rows - features) * kTileTokens * sizeof(float));
  }

  // Frees the storage (a later resize allocates again).
  void release() {
    data_.reset(0);
    features_ = rows_ = tokens_ = 0;
  }

  int32_t features() const { return features_; }
  int32_t rows() const { return rows_; }
  int32_t tokens() const { return tokens_; }
  int32_t num_tiles() const { return view().num_tiles(); }
  int32_t tokens_in_tile(int32_t i) const { return view().tokens_in_tile(i); }
  int64_t tile_stride() const { return static_cast<int64_t>(rows_) * kTileTokens; }
  float* tile(int32_t i) { return data_.data() + i * tile_stride(); }
  const float* tile(int32_t i) const { return data_.data() + i * tile_stride(); }
  // All tiles, or tiles [first, first + count), as a view.
  TileView view() const { return TileView(const_cast<float*>(data_.data()), features_, rows_, tokens_); }
  TileView view(int32_t first, int32_t count) const {
    const int32_t tokens = std::min(tokens_ - first * kTileTokens, count * kTileTokens);
    return TileView(const_cast<float*>(tile(first)), features_, rows_, tokens);
  }

  float& at(int32_t feature, int32_t token) {
    return tile(token / kTileTokens)[static_cast<int64_t>(feature) * kTileTokens + token % kTileTokens];
  }
  float at(int32_t feature, int32_t token) const {
    return tile(token / kTileTokens)[static_cast<int64_t>(feature) * kTileTokens + token % kTileTokens];
  }

 private:
  AlignedBuffer<float> data_;
  int32_t features_ = 0, rows_ = 0, tokens_ = 0;
};

}  // namespace sparsebert
