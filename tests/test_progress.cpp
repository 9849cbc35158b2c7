// Progress lines (core/progress): a slow item's rate as seconds each, not "0/s".
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "core/progress.h"

namespace pivotmt {
namespace {

std::string line_after(uint64_t done, double seconds) {
  char* buffer = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buffer, &size);
  {
    Progress p("fine-tuning", 20, ProgressUnit::Items, out);
    p.set(0);  // the first set() is where the rate starts (a resumed run starts part-way)
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    p.set(done);
    p.finish();
  }
  std::fclose(out);
  std::string text(buffer, size);
  std::free(buffer);
  return text;
}

TEST(Progress, SlowItemsShowSecondsEach) {
  Progress::set_quiet(false);
  // One step in ~1.2 s: "1.2 s each" (was "0/s": under one item a second rounded to nothing).
  const std::string slow = line_after(1, 1.2);
  EXPECT_NE(slow.find(" s each"), std::string::npos) << slow;
  EXPECT_EQ(slow.find(" 0/s"), std::string::npos) << slow;
  // Many items quickly: items per second.
  const std::string fast = line_after(20, 0.05);
  EXPECT_NE(fast.find("/s"), std::string::npos) << fast;
  EXPECT_EQ(fast.find(" s each"), std::string::npos) << fast;
}

}  // namespace
}  // namespace pivotmt
