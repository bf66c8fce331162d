// libFuzzer target for src/sql: the prefilter never waves through SQL the parser finds effects in.
//
// Each input is one query string. sql::MayAffectSession() is the cheap check
// the proxy runs on every query; only when it says "maybe" does the parser
// run. The invariant: when the prefilter says "no", the parser, with either
// value of standard_conforming_strings, finds no session effect either (a
// miss would let a SET or a LISTEN through unseen; the pins of precaution —
// too big or deep to walk, refused by the grammar, read differently under
// the two settings — say what the parser could not see, and are no miss). The parse tree walk also
// runs for every input, for crashes and undefined behaviour. Build and run
// with fuzz/run.sh SECONDS sql.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "sql/session_effects.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pgwarden::sql;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool maybe = MayAffectSession(text);
  for (bool scs : {true, false}) {
    SessionEffects e = AnalyzeSessionEffects(text, scs);
    // A tree too deep to walk is pinned as a precaution, not because it was
    // seen to do anything: no effect to miss.
    e.pins &= ~kPinsPrecaution;
    if (!maybe && e.any()) {
      std::fprintf(stderr,
                   "invariant failed: the prefilter let through a string with session effects "
                   "(standard_conforming_strings %s, pins %u, steps %zu)\n",
                   scs ? "on" : "off", e.pins, e.steps.size());
      std::abort();
    }
  }
  return 0;
}
