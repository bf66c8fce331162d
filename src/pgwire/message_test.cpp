// Tests of the protocol v3 codec: header and startup decoding, exact bytes of every builder.
#include "pgwire/message.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace pgwarden::pgwire {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr uint32_t kMaxLength = 1 << 20;
constexpr uint32_t kMaxStartup = 10000;

// Bytes from a literal that may contain NULs.
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// A startup-phase packet: int32 length (counting itself) + code + payload.
std::string Packet(int32_t code, const std::string& payload) {
  std::string out;
  uint32_t len = static_cast<uint32_t>(8 + payload.size());
  for (int shift : {24, 16, 8, 0}) out.push_back(static_cast<char>((len >> shift) & 0xff));
  for (int shift : {24, 16, 8, 0}) {
    out.push_back(static_cast<char>((static_cast<uint32_t>(code) >> shift) & 0xff));
  }
  return out + payload;
}

// ---- DecodeHeader ----

TEST(DecodeHeaderTest, NeedsFiveBytes) {
  Header h;
  EXPECT_EQ(DecodeHeader("", kMaxLength, &h), DecodeStatus::kNeedMoreData);
  EXPECT_EQ(DecodeHeader("Q", kMaxLength, &h), DecodeStatus::kNeedMoreData);
  EXPECT_EQ(DecodeHeader(B("Q\0\0\0"), kMaxLength, &h), DecodeStatus::kNeedMoreData);
}

TEST(DecodeHeaderTest, ReadsTypeAndLength) {
  Header h;
  ASSERT_EQ(DecodeHeader(B("Q\0\0\0\x0dSELECT 1;\0"), kMaxLength, &h), DecodeStatus::kReady);
  EXPECT_EQ(h.type, 'Q');
  EXPECT_EQ(h.length, 13u);
  EXPECT_EQ(h.wire_size(), 14u);
  EXPECT_EQ(h.body_size(), 9u);
  // A header alone is enough: the body may still be on its way.
  ASSERT_EQ(DecodeHeader(B("Z\0\0\0\x05"), kMaxLength, &h), DecodeStatus::kReady);
  EXPECT_EQ(h.body_size(), 1u);
  ASSERT_EQ(DecodeHeader(B("X\0\0\0\x04"), kMaxLength, &h), DecodeStatus::kReady);
  EXPECT_EQ(h.body_size(), 0u);
  // Big-endian, all four bytes.
  ASSERT_EQ(DecodeHeader(B("d\x00\x01\x02\x03"), 1u << 30, &h), DecodeStatus::kReady);
  EXPECT_EQ(h.length, 0x00010203u);
}

TEST(DecodeHeaderTest, RejectsLengthBelowFour) {
  Header h;
  EXPECT_EQ(DecodeHeader(B("Q\0\0\0\x03"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B("Q\0\0\0\0"), kMaxLength, &h), DecodeStatus::kError);
}

TEST(DecodeHeaderTest, RejectsOversize) {
  Header h;
  EXPECT_EQ(DecodeHeader(B("Q\0\0\x01\x00"), 256, &h), DecodeStatus::kReady);
  EXPECT_EQ(DecodeHeader(B("Q\0\0\x01\x01"), 256, &h), DecodeStatus::kError);
  // A length with the top bit set is not negative, just huge.
  EXPECT_EQ(DecodeHeader(B("Q\x80\0\0\0"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B("Q\xff\xff\xff\xff"), kMaxLength, &h), DecodeStatus::kError);
}

TEST(DecodeHeaderTest, RejectsNonPrintableType) {
  Header h;
  EXPECT_EQ(DecodeHeader(B("\0\0\0\0\x05"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B(" \0\0\0\x05"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B("\x7f\0\0\0\x05"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B("\xc3\0\0\0\x05"), kMaxLength, &h), DecodeStatus::kError);
  // Known at once: no need to wait for the length.
  EXPECT_EQ(DecodeHeader(B("\0"), kMaxLength, &h), DecodeStatus::kError);
  EXPECT_EQ(DecodeHeader(B("!\0\0\0\x04"), kMaxLength, &h), DecodeStatus::kReady);
  EXPECT_EQ(DecodeHeader(B("~\0\0\0\x04"), kMaxLength, &h), DecodeStatus::kReady);
}

// ---- DecodeStartupPacket ----

TEST(DecodeStartupPacketTest, Startup) {
  std::string buf = Packet(kProtocolVersion3, B("user\0alice\0database\0app\0_pq_.x\0y\0\0"));
  buf += "Qtrailing";  // the next message must not be consumed
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  ASSERT_EQ(DecodeStartupPacket(buf, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady)
      << error;
  EXPECT_EQ(p.kind, StartupPacket::Kind::kStartup);
  EXPECT_EQ(p.protocol, kProtocolVersion3);
  EXPECT_EQ(consumed, buf.size() - 9);
  EXPECT_THAT(p.parameters,
              ElementsAre(Pair("user", "alice"), Pair("database", "app"), Pair("_pq_.x", "y")));
  EXPECT_EQ(p.Get("user"), "alice");
  EXPECT_EQ(p.Get("database"), "app");
  EXPECT_EQ(p.Get("options"), std::nullopt);
}

TEST(DecodeStartupPacketTest, EmptyValueIsKept) {
  std::string buf = Packet(kProtocolVersion3, B("user\0bob\0options\0\0\0"));
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  ASSERT_EQ(DecodeStartupPacket(buf, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady);
  EXPECT_EQ(p.Get("options"), "");
}

TEST(DecodeStartupPacketTest, AcceptsNewerMinorVersion) {
  int32_t v3_2 = (3 << 16) | 2;
  std::string buf = Packet(v3_2, B("user\0alice\0\0"));
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  ASSERT_EQ(DecodeStartupPacket(buf, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kStartup);
  EXPECT_EQ(p.protocol, v3_2);
}

TEST(DecodeStartupPacketTest, SslAndGssEncRequests) {
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  ASSERT_EQ(
      DecodeStartupPacket(B("\0\0\0\x08\x04\xd2\x16\x2f"), kMaxStartup, &p, &consumed, &error),
      DecodeStatus::kReady);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kSslRequest);
  EXPECT_EQ(consumed, 8u);
  ASSERT_EQ(DecodeStartupPacket(Packet(kGssEncRequestCode, ""), kMaxStartup, &p, &consumed, &error),
            DecodeStatus::kReady);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kGssEncRequest);
  EXPECT_EQ(consumed, 8u);
  // An SSLRequest with a payload is not one.
  EXPECT_EQ(
      DecodeStartupPacket(Packet(kSslRequestCode, "xxxx"), kMaxStartup, &p, &consumed, &error),
      DecodeStatus::kError);
}

TEST(DecodeStartupPacketTest, CancelRequest) {
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  std::string buf = B("\0\0\0\x10\x04\xd2\x16\x2e\0\0\x30\x39\xde\xad\xbe\xef");
  ASSERT_EQ(DecodeStartupPacket(buf, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kCancel);
  EXPECT_EQ(p.cancel_pid, 12345);
  EXPECT_EQ(p.cancel_key, static_cast<int32_t>(0xdeadbeef));
  EXPECT_EQ(consumed, 16u);
  EXPECT_EQ(
      DecodeStartupPacket(Packet(kCancelRequestCode, "1234"), kMaxStartup, &p, &consumed, &error),
      DecodeStatus::kError);
  EXPECT_THAT(error, HasSubstr("cancel"));
}

TEST(DecodeStartupPacketTest, NeedsMoreData) {
  std::string full = Packet(kProtocolVersion3, B("user\0alice\0\0"));
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_EQ(DecodeStartupPacket(full.substr(0, n), kMaxStartup, &p, &consumed, &error),
              DecodeStatus::kNeedMoreData)
        << n;
  }
  EXPECT_EQ(DecodeStartupPacket(full, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady);
}

// Each malformed packet → kError with a message mentioning `expected`.
struct BadStartup {
  const char* name;
  std::string bytes;
  const char* expected;
};

TEST(DecodeStartupPacketTest, RejectsMalformed) {
  const BadStartup cases[] = {
      {"length 7", B("\0\0\0\x07\0\x03\0\0"), "invalid length"},
      {"length 0", B("\0\0\0\0"), "invalid length"},
      {"length 2^31", B("\x80\0\0\0\0\x03\0\0"), "invalid length"},
      {"over max", Packet(kProtocolVersion3, std::string(kMaxStartup, 'x')), "invalid length"},
      {"protocol 2.0", Packet(2 << 16, B("user\0alice\0\0")),
       "unsupported frontend protocol 2.0: server supports 3.0 to 3.0"},
      {"protocol 4.1", Packet((4 << 16) | 1, ""), "unsupported frontend protocol 4.1"},
      {"unknown 1234.x code", Packet((1234 << 16) | 1, ""), "unsupported frontend protocol 1234.1"},
      {"missing terminator", Packet(kProtocolVersion3, B("user\0alice\0")), "terminator"},
      {"missing NUL", Packet(kProtocolVersion3, B("user\0alice")), "missing value"},
      {"missing value", Packet(kProtocolVersion3, B("user\0alice\0database\0")), "missing value"},
      {"bytes after terminator", Packet(kProtocolVersion3, B("user\0alice\0\0x")), "terminator"},
      {"no parameters at all", Packet(kProtocolVersion3, ""), "terminator"},
      {"missing user", Packet(kProtocolVersion3, B("database\0app\0\0")), "no PostgreSQL user"},
      {"empty user", Packet(kProtocolVersion3, B("user\0\0\0")), "no PostgreSQL user"},
  };
  for (const auto& c : cases) {
    StartupPacket p;
    size_t consumed = 0;
    std::string error;
    EXPECT_EQ(DecodeStartupPacket(c.bytes, kMaxStartup, &p, &consumed, &error),
              DecodeStatus::kError)
        << c.name;
    EXPECT_THAT(error, HasSubstr(c.expected)) << c.name;
  }
}

TEST(DecodeStartupPacketTest, GarbageNeverCrashes) {
  // Every prefix and a few byte flips of a valid packet: any status, no crash.
  std::string full = Packet(kProtocolVersion3, B("user\0alice\0database\0app\0\0"));
  for (size_t i = 0; i < full.size(); ++i) {
    for (unsigned char flip : {0x00, 0x01, 0x80, 0xff}) {
      std::string bytes = full;
      bytes[i] = static_cast<char>(flip);
      StartupPacket p;
      size_t consumed = 0;
      std::string error;
      DecodeStatus s = DecodeStartupPacket(bytes, kMaxStartup, &p, &consumed, &error);
      if (s == DecodeStatus::kReady) {
        EXPECT_LE(consumed, bytes.size());
      }
      if (s == DecodeStatus::kError) {
        EXPECT_FALSE(error.empty());
      }
    }
  }
}

// ---- Readers ----

TEST(ReadersTest, ReadIntegersAndStrings) {
  std::string body = B("\xff\xfe\x80\0\0\x01name\0rest");
  size_t pos = 0;
  int16_t i16 = 0;
  int32_t i32 = 0;
  std::string_view s;
  ASSERT_TRUE(ReadInt16(body, &pos, &i16));
  EXPECT_EQ(i16, -2);
  ASSERT_TRUE(ReadInt32(body, &pos, &i32));
  EXPECT_EQ(i32, static_cast<int32_t>(0x80000001));
  ASSERT_TRUE(ReadCString(body, &pos, &s));
  EXPECT_EQ(s, "name");
  size_t before = pos;
  EXPECT_FALSE(ReadCString(body, &pos, &s));  // "rest" has no NUL
  EXPECT_EQ(pos, before);
  pos = body.size() - 1;
  EXPECT_FALSE(ReadInt16(body, &pos, &i16));
  pos = body.size() + 5;  // out of range must not crash
  EXPECT_FALSE(ReadInt32(body, &pos, &i32));
  EXPECT_FALSE(ReadCString(body, &pos, &s));
}

// ---- Builders: exact bytes ----

TEST(BuildersTest, ReadyForQuery) {
  std::string out;
  AppendReadyForQuery(out, 'I');
  EXPECT_EQ(out, B("Z\0\0\0\x05I"));
}

TEST(BuildersTest, AppendsToExistingBuffer) {
  std::string out = "prefix";
  AppendReadyForQuery(out, 'T');
  AppendSync(out);
  EXPECT_EQ(out, B("prefixZ\0\0\0\x05TS\0\0\0\x04"));
}

TEST(BuildersTest, Authentication) {
  std::string out;
  AppendAuthenticationOk(out);
  EXPECT_EQ(out, B("R\0\0\0\x08\0\0\0\0"));
  out.clear();
  AppendAuthenticationCleartext(out);
  EXPECT_EQ(out, B("R\0\0\0\x08\0\0\0\x03"));
  out.clear();
  const uint8_t salt[4] = {0x01, 0x02, 0xfe, 0xff};
  AppendAuthenticationMd5(out, salt);
  EXPECT_EQ(out, B("R\0\0\0\x0c\0\0\0\x05\x01\x02\xfe\xff"));
  out.clear();
  AppendAuthenticationSasl(out);
  EXPECT_EQ(out, B("R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"));
  out.clear();
  AppendAuthenticationSaslContinue(out, "r=abc");
  EXPECT_EQ(out, B("R\0\0\0\x0d\0\0\0\x0br=abc"));
  out.clear();
  AppendAuthenticationSaslFinal(out, "v=xy");
  EXPECT_EQ(out, B("R\0\0\0\x0c\0\0\0\x0cv=xy"));
}

TEST(BuildersTest, ErrorResponse) {
  std::string out;
  AppendErrorResponse(out, "FATAL", "28P01", "bad password");
  std::string body = B("SFATAL\0VFATAL\0C28P01\0Mbad password\0\0");
  std::string expected = B("E\0\0\0") + std::string(1, static_cast<char>(4 + body.size())) + body;
  EXPECT_EQ(out, expected);

  out.clear();
  AppendErrorResponse(out, "ERROR", "08P01", "m", "d", "h");
  EXPECT_EQ(out, B("E\0\0\0\x23SERROR\0VERROR\0C08P01\0Mm\0Dd\0Hh\0\0"));
}

TEST(BuildersTest, NoticeResponse) {
  std::string out;
  AppendNoticeResponse(out, "00000", "hi");
  EXPECT_EQ(out, B("N\0\0\0\x20SNOTICE\0VNOTICE\0C00000\0Mhi\0\0"));
}

TEST(BuildersTest, SessionMessages) {
  std::string out;
  AppendParameterStatus(out, "a", "bc");
  EXPECT_EQ(out, B("S\0\0\0\x09"
                   "a\0bc\0"));
  out.clear();
  AppendBackendKeyData(out, 0x01020304, -1);
  EXPECT_EQ(out, B("K\0\0\0\x0c\x01\x02\x03\x04\xff\xff\xff\xff"));
  out.clear();
  AppendParseComplete(out);
  AppendCloseComplete(out);
  AppendEmptyQueryResponse(out);
  AppendTerminate(out);
  EXPECT_EQ(out, B("1\0\0\0\x04"
                   "3\0\0\0\x04I\0\0\0\x04X\0\0\0\x04"));
  out.clear();
  AppendCommandComplete(out, "SHOW");
  EXPECT_EQ(out, B("C\0\0\0\x09SHOW\0"));
}

TEST(BuildersTest, RowDescriptionAndDataRow) {
  std::string out;
  AppendRowDescription(out, {"a", "bc"});
  std::string col_tail = B("\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0");
  EXPECT_EQ(out, B("T\0\0\0\x2f\0\x02") + B("a\0") + col_tail + B("bc\0") + col_tail);

  out.clear();
  AppendDataRow(out, {std::string("x"), std::nullopt, std::string("")});
  EXPECT_EQ(out, B("D\0\0\0\x13\0\x03\0\0\0\x01x\xff\xff\xff\xff\0\0\0\0"));
}

TEST(BuildersTest, FrontendMessages) {
  std::string out;
  AppendStartupMessage(out, {{"user", "u"}, {"database", "d"}});
  EXPECT_EQ(out, B("\0\0\0\x1b\0\x03\0\0user\0u\0database\0d\0\0"));
  out.clear();
  AppendCancelRequest(out, 7, 9);
  EXPECT_EQ(out, B("\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\0\0\0\x09"));
  out.clear();
  AppendQuery(out, "SELECT 1");
  EXPECT_EQ(out, B("Q\0\0\0\x0dSELECT 1\0"));
  out.clear();
  AppendPasswordMessage(out, "pw");
  EXPECT_EQ(out, B("p\0\0\0\x07pw\0"));
  out.clear();
  AppendSaslInitialResponse(out, "SCRAM-SHA-256", "n,,n=,r=x");
  EXPECT_EQ(out, B("p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x"));
  out.clear();
  AppendSaslResponse(out, "c=biws");
  EXPECT_EQ(out, B("p\0\0\0\x0a"
                   "c=biws"));
  out.clear();
  AppendParse(out, "s1", "SELECT $1", {23});
  EXPECT_EQ(out, B("P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17"));
  out.clear();
  AppendCloseStatement(out, "s1");
  EXPECT_EQ(out, B("C\0\0\0\x08Ss1\0"));
}

TEST(BuildersTest, StartupMessageDecodesBack) {
  std::string out;
  AppendStartupMessage(out, {{"user", "alice"}, {"application_name", "pgwarden"}});
  StartupPacket p;
  size_t consumed = 0;
  std::string error;
  ASSERT_EQ(DecodeStartupPacket(out, kMaxStartup, &p, &consumed, &error), DecodeStatus::kReady);
  EXPECT_EQ(consumed, out.size());
  EXPECT_EQ(p.Get("application_name"), "pgwarden");
}

TEST(BuildersTest, EmbeddedNulIsCutToKeepFraming) {
  std::string out;
  AppendQuery(out, std::string("SELECT 1\0; DROP", 15));
  EXPECT_EQ(out, B("Q\0\0\0\x0dSELECT 1\0"));
}

TEST(WriterTest, BeginFinishPatchesLength) {
  std::string out = "xx";
  Writer w(out);
  size_t start = w.Begin('d');
  EXPECT_EQ(start, 2u);
  w.Int16(-1);
  w.Int32(258);
  w.CString("ab");
  w.Bytes(B("\0z"));
  w.Finish(start);
  EXPECT_EQ(out, B("xxd\0\0\0\x0f\xff\xff\0\0\x01\x02"
                   "ab\0\0z"));
}

// ---- ParseErrorFields ----

TEST(ParseErrorFieldsTest, ReadsBuiltResponse) {
  std::string out;
  AppendErrorResponse(out, "FATAL", "3D000", "database \"x\" does not exist", "", "try y");
  Header h;
  ASSERT_EQ(DecodeHeader(out, kMaxLength, &h), DecodeStatus::kReady);
  ASSERT_EQ(h.wire_size(), out.size());
  auto fields = ParseErrorFields(std::string_view(out).substr(5));
  EXPECT_THAT(fields, ElementsAre(Pair('C', "3D000"), Pair('H', "try y"),
                                  Pair('M', "database \"x\" does not exist"), Pair('S', "FATAL"),
                                  Pair('V', "FATAL")));
}

TEST(ParseErrorFieldsTest, TruncatedBodyKeepsCompleteFields) {
  EXPECT_THAT(ParseErrorFields(B("SERROR\0C42P01\0Mrelat")),
              ElementsAre(Pair('C', "42P01"), Pair('S', "ERROR")));
  EXPECT_TRUE(ParseErrorFields("").empty());
  EXPECT_TRUE(ParseErrorFields(B("\0SERROR\0")).empty());
}

}  // namespace
}  // namespace pgwarden::pgwire
