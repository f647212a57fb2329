// Repairs that objects need in a child of fork(). Only the thread that called fork() exists in the child, so a
// lock another thread held at that moment stays locked forever there, and whatever that thread was changing is
// half-changed. Objects holding such state register a repair, which runs in the child before fork() returns,
// while the child still has a single thread.
#pragma once

#include <functional>

namespace sparsebert {

// `owner` identifies the registration (remove it before the owner dies); `repair` must not block.
void add_fork_repair(const void* owner, std::function<void()> repair);
void remove_fork_repair(const void* owner);

}  // namespace sparsebert
