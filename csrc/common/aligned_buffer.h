// An owning, 64-byte aligned, zero-initialised array: cache-line and AVX-512 aligned, and never uninitialised
// (kernels may compute on padding lanes, which must hold finite values). Large arrays are mapped straight from the
// OS: their pages arrive zeroed (no memset) and go back to the OS when the buffer is freed, so an engine's memory
// really shrinks after a large call (the C allocator would keep them in its heap).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace sparsebert {

constexpr std::size_t kAlignment = 64;
constexpr std::size_t kMapBytes = std::size_t{1} << 20;  // from here on, mmap

template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { reset(n); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), bytes_(std::exchange(o.bytes_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { release(); }

  // Replaces the contents with n zeroed elements (n == 0 frees everything).
  void reset(std::size_t n) {
    release();
    if (n == 0) return;
    const std::size_t bytes = (n * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = nullptr;
    if (bytes >= kMapBytes) {
      p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
    } else {
      p = std::aligned_alloc(kAlignment, bytes);
      if (p == nullptr) throw std::bad_alloc();
      std::memset(p, 0, bytes);
    }
    data_ = static_cast<T*>(p);
    size_ = n;
    bytes_ = bytes;
  }

  // Grows (zeroed, contents dropped) only when fewer than n elements are held.
  void ensure(std::size_t n) {
    if (n > size_) reset(n);
  }

  void assign(const T* src, std::size_t n) {
    reset(n);
    if (n) std::memcpy(data_, src, n * sizeof(T));
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t nbytes() const { return size_ * sizeof(T); }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }

 private:
  void release() {
    if (data_ != nullptr) {
      if (bytes_ >= kMapBytes)
        munmap(data_, bytes_);
      else
        std::free(data_);
    }
    data_ = nullptr;
    size_ = 0;
    bytes_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;  // allocated, which says how it was allocated
};

}  // namespace sparsebert
