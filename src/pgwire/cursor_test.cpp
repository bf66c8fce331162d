// Tests of MessageCursor: whole, passed and skipped messages over every way of cutting the stream.
#include "pgwire/cursor.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

namespace pgwarden::pgwire {
namespace {

using Step = MessageCursor::Step;

std::string Msg(char type, const std::string& body) {
  std::string out;
  Writer w(out);
  size_t start = w.Begin(type);
  w.Bytes(body);
  w.Finish(start);
  return out;
}

// What a run over a stream produced: each taken message, and the bytes of
// passed messages in order (one entry per message).
struct Walk {
  std::vector<std::string> taken;
  std::vector<std::string> passed;
  std::vector<char> headers;
  bool error = false;
};

// Feeds `stream` in pieces of the given sizes (cycling); `decide` picks the
// decision per message type: 'T' take, 'P' pass, 'S' skip.
Walk Feed(const std::string& stream, const std::vector<size_t>& pieces,
          const std::function<char(char)>& decide, uint32_t max = 1 << 20) {
  MessageCursor c(max);
  Walk w;
  size_t off = 0, i = 0;
  bool passing = false;
  while (off < stream.size() && !w.error) {
    size_t n = std::min(pieces[i++ % pieces.size()], stream.size() - off);
    std::string_view in(stream.data() + off, n);
    off += n;
    for (;;) {
      Step s = c.Next(&in);
      if (s == Step::kNeedMore) break;
      if (s == Step::kError) {
        w.error = true;
        break;
      }
      if (s == Step::kHeader) {
        w.headers.push_back(c.header().type);
        char d = decide(c.header().type);
        if (d == 'T') c.Take();
        if (d == 'P') {
          c.Pass();
          w.passed.emplace_back();
          passing = true;
        }
        if (d == 'S') c.Skip();
        continue;
      }
      if (s == Step::kMessage) w.taken.emplace_back(c.message());
      if (s == Step::kBytes) {
        EXPECT_TRUE(passing);
        w.passed.back().append(c.bytes());
      }
    }
  }
  return w;
}

TEST(MessageCursorTest, TakesAWholeMessageWithoutACopyWhenItIsInOnePiece) {
  std::string m = Msg('Q', std::string("select 1") + '\0');
  MessageCursor c(1024);
  std::string_view in = m;
  ASSERT_EQ(c.Next(&in), Step::kHeader);
  EXPECT_EQ(c.header().type, 'Q');
  EXPECT_TRUE(c.InMessage());
  c.Take();
  ASSERT_EQ(c.Next(&in), Step::kMessage);
  EXPECT_EQ(c.message().data(), m.data());  // a view of the input
  EXPECT_EQ(c.message(), m);
  EXPECT_TRUE(in.empty());
  EXPECT_FALSE(c.InMessage());
  EXPECT_EQ(c.Next(&in), Step::kNeedMore);
}

TEST(MessageCursorTest, AnEmptyBodyPassesAsItsHeader) {
  std::string m = Msg('S', "");
  Walk w = Feed(m, {1}, [](char) { return 'P'; });
  ASSERT_EQ(w.passed.size(), 1u);
  EXPECT_EQ(w.passed[0], m);
}

TEST(MessageCursorTest, MalformedHeadersAreErrors) {
  for (std::string bad :
       {std::string("Q\0\0\0\3", 5), std::string("\x01", 1), std::string("Q\x7f\0\0\0", 5)}) {
    MessageCursor c(1 << 20);
    std::string_view in = bad;
    EXPECT_EQ(c.Next(&in), Step::kError) << testing::PrintToString(bad);
    EXPECT_EQ(c.Next(&in), Step::kError);  // and stays so
  }
}

TEST(MessageCursorTest, InMessageAcrossASplitHeader) {
  std::string m = Msg('D', "abc");
  MessageCursor c(1024);
  std::string_view in(m.data(), 2);
  EXPECT_EQ(c.Next(&in), Step::kNeedMore);
  EXPECT_TRUE(c.InMessage());
  in = std::string_view(m.data() + 2, m.size() - 2);
  ASSERT_EQ(c.Next(&in), Step::kHeader);
  c.Skip();
  EXPECT_EQ(c.Next(&in), Step::kNeedMore);
  EXPECT_FALSE(c.InMessage());
}

// Property: for random streams cut at random places, taking reproduces each
// message, passing reproduces its bytes exactly, skipping drops them, and
// every header is seen once in order.
TEST(MessageCursorTest, EveryCutGivesTheSameMessages) {
  std::mt19937 rng(20261204);
  for (int round = 0; round < 400; ++round) {
    std::vector<std::string> msgs;
    std::string stream;
    int count = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < count; ++i) {
      char type = "QPBDESCdZT"[rng() % 10];
      std::string body(rng() % 40, static_cast<char>('a' + rng() % 26));
      msgs.push_back(Msg(type, body));
      stream += msgs.back();
    }
    std::vector<size_t> pieces;
    for (int i = 0; i < 8; ++i) pieces.push_back(1 + rng() % 9);
    auto decide = [](char t) { return t == 'Q' || t == 'Z' ? 'T' : t == 'd' ? 'S' : 'P'; };
    Walk w = Feed(stream, pieces, decide);
    ASSERT_FALSE(w.error);
    std::vector<std::string> want_taken, want_passed;
    std::vector<char> want_headers;
    for (const auto& m : msgs) {
      want_headers.push_back(m[0]);
      char d = decide(m[0]);
      if (d == 'T') want_taken.push_back(m);
      if (d == 'P') want_passed.push_back(m);
    }
    EXPECT_EQ(w.headers, want_headers);
    EXPECT_EQ(w.taken, want_taken);
    EXPECT_EQ(w.passed, want_passed);
  }
}

TEST(MessageCursorTest, TheLengthLimitIsChecked) {
  std::string m = Msg('d', std::string(100, 'x'));
  MessageCursor c(50);
  std::string_view in = m;
  EXPECT_EQ(c.Next(&in), Step::kError);
  EXPECT_EQ(c.error_length(), 104u);
}

}  // namespace
}  // namespace pgwarden::pgwire
