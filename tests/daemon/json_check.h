// A strict JSON (RFC 8259) reader for tests that check what rcpgd and
// rcpg-tool print: anything that is not exactly one JSON value (plus
// whitespace) is an error naming the offset.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rcpg::test {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string text;  // String; Number: its literal
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* get(std::string_view key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
  // Integer value of a Number without fraction or exponent.
  std::optional<uint64_t> integer() const {
    if (type != Type::Number || text.find_first_of(".eE-") != std::string::npos)
      return std::nullopt;
    return std::strtoull(text.c_str(), nullptr, 10);
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view s) : s_(s) {}

  std::optional<Json> parse(std::string& error) {
    Json v;
    space();
    if (!value(v, 0)) {
      error = why_ + " at offset " + std::to_string(i_);
      return std::nullopt;
    }
    space();
    if (i_ != s_.size()) {
      error = "trailing text at offset " + std::to_string(i_);
      return std::nullopt;
    }
    return v;
  }

 private:
  bool fail(const char* why) {
    why_ = why;
    return false;
  }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return fail("bad literal");
    i_ += word.size();
    return true;
  }
  bool digits() {
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool number(Json& v) {
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (!digits()) {
      return fail("bad number");
    }
    if (i_ < s_.size() && s_[i_] == '.' && (++i_, !digits())) return fail("bad fraction");
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return fail("bad exponent");
    }
    v.type = Json::Type::Number;
    v.text = std::string(s_.substr(start, i_ - start));
    v.number = std::strtod(v.text.c_str(), nullptr);
    return true;
  }
  bool string(std::string& out) {
    ++i_;  // opening quote
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) break;
      char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) return fail("short \\u escape");
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= static_cast<uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f')
              cp |= static_cast<uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              cp |= static_cast<uint32_t>(h - 'A' + 10);
            else
              return fail("bad \\u escape");
          }
          // Tests only need the code point's low byte for ASCII control
          // characters; others are kept as UTF-8 of the BMP code point.
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default:
          return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }
  bool value(Json& v, int depth) {
    if (depth > 64) return fail("nested too deeply");
    if (i_ >= s_.size()) return fail("value expected");
    char c = s_[i_];
    if (c == '{') {
      v.type = Json::Type::Object;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
      for (;;) {
        space();
        if (i_ >= s_.size() || s_[i_] != '"') return fail("member name expected");
        std::string key;
        if (!string(key)) return false;
        space();
        if (i_ >= s_.size() || s_[i_++] != ':') return fail("':' expected");
        space();
        Json m;
        if (!value(m, depth + 1)) return false;
        v.members.emplace_back(std::move(key), std::move(m));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
        return fail("',' or '}' expected");
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
      for (;;) {
        space();
        Json item;
        if (!value(item, depth + 1)) return false;
        v.items.push_back(std::move(item));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
        return fail("',' or ']' expected");
      }
    }
    if (c == '"') {
      v.type = Json::Type::String;
      return string(v.text);
    }
    if (c == 't' || c == 'f') {
      v.type = Json::Type::Bool;
      v.boolean = c == 't';
      return literal(c == 't' ? "true" : "false");
    }
    if (c == 'n') return literal("null");
    if (c == '-' || (c >= '0' && c <= '9')) return number(v);
    return fail("value expected");
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string why_;
};

inline std::optional<Json> parse_json(std::string_view text, std::string& error) {
  return JsonReader(text).parse(error);
}

}  // namespace rcpg::test
