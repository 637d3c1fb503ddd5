// Caption cleaning of DeepFloyd-IF / diffusers PixArtAlphaPipeline._clean_caption (models.md §6.4),
// rule for rule, on UTF-32 text with std::wregex (ECMAScript; the reference's patterns use no
// Python-only syntax). \w and \b follow a UTF-8 locale when one is installed, as Python's
// Unicode-aware re does; otherwise ASCII.
#include <cwctype>
#include <locale>
#include <map>
#include <regex>
#include <string>

#include "ditcache/text/tokenizer.h"

namespace ditcache {

namespace {

// ---- UTF-8 <-> UTF-32 -----------------------------------------------------------------------

std::wstring from_utf8(const std::string& s) {
  std::wstring out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (n < 0 || i + static_cast<size_t>(n) >= s.size()) {  // invalid lead byte or truncated sequence
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    uint32_t cp = n == 0 ? c : c & (0x3F >> n);
    bool ok = true;
    for (int k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((d >> 6) != 0x2) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (d & 0x3F);
    }
    if (!ok || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(static_cast<wchar_t>(cp));
    i += static_cast<size_t>(n) + 1;
  }
  return out;
}

std::string to_utf8(const std::wstring& w) {
  std::string out;
  out.reserve(w.size());
  for (wchar_t wc : w) {
    auto cp = static_cast<uint32_t>(wc);
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

// ---- locale and regexes -----------------------------------------------------------------------

const std::locale& text_locale() {
  static const std::locale loc = [] {
    for (const char* name : {"C.UTF-8", "C.utf8", "en_US.UTF-8", "en_US.utf8"}) {
      try {
        return std::locale(name);
      } catch (const std::exception&) {
      }
    }
    return std::locale::classic();
  }();
  return loc;
}

std::wregex make_regex(const std::wstring& pattern) {
  std::wregex re;
  re.imbue(text_locale());
  re.assign(pattern, std::regex::ECMAScript);
  return re;
}

// re.sub(pattern, replacement, text); the replacement uses ECMAScript's $1 for Python's \1.
std::wstring sub(const std::wstring& pattern, const std::wstring& replacement, const std::wstring& text) {
  // Regexes are compiled once per pattern (the set of patterns is fixed).
  static thread_local std::map<std::wstring, std::wregex> cache;
  auto it = cache.find(pattern);
  if (it == cache.end()) it = cache.emplace(pattern, make_regex(pattern)).first;
  return std::regex_replace(text, it->second, replacement);
}

bool is_space(wchar_t c) { return std::isspace(c, text_locale()) || c == 0xA0 || c == 0x85; }

std::wstring strip(const std::wstring& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::wstring lower(std::wstring s) {
  for (auto& c : s) c = std::tolower(c, text_locale());
  return s;
}

// ---- urllib.parse.unquote_plus -----------------------------------------------------------------

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string unquote_plus(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;  // decoded as UTF-8 with replacement by from_utf8, like unquote(errors='replace')
}

// ---- html.unescape (numeric references and the common named entities) -------------------------

std::wstring unescape_html(const std::wstring& s) {
  // name -> code point; `legacy` names also match without the trailing ';' (HTML5 rules).
  struct Entity {
    wchar_t cp;
    bool legacy;
  };
  static const std::map<std::wstring, Entity> kEntities = {
      {L"amp", {L'&', true}},      {L"AMP", {L'&', true}},      {L"lt", {L'<', true}},
      {L"LT", {L'<', true}},       {L"gt", {L'>', true}},       {L"GT", {L'>', true}},
      {L"quot", {L'"', true}},     {L"QUOT", {L'"', true}},     {L"nbsp", {0xA0, true}},
      {L"copy", {0xA9, true}},     {L"COPY", {0xA9, true}},     {L"reg", {0xAE, true}},
      {L"REG", {0xAE, true}},      {L"deg", {0xB0, true}},      {L"middot", {0xB7, true}},
      {L"times", {0xD7, true}},    {L"laquo", {0xAB, true}},    {L"raquo", {0xBB, true}},
      {L"apos", {L'\'', false}},   {L"trade", {0x2122, false}}, {L"hellip", {0x2026, false}},
      {L"mdash", {0x2014, false}}, {L"ndash", {0x2013, false}}, {L"lsquo", {0x2018, false}},
      {L"rsquo", {0x2019, false}}, {L"ldquo", {0x201C, false}}, {L"rdquo", {0x201D, false}},
      {L"bull", {0x2022, false}},  {L"euro", {0x20AC, false}}};
  std::wstring out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != L'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < s.size() && s[j] == L'#') {  // &#123; / &#x7b; (the ';' is optional)
      size_t k = j + 1;
      const bool hex = k < s.size() && (s[k] == L'x' || s[k] == L'X');
      if (hex) ++k;
      const size_t digits_begin = k;
      uint64_t cp = 0;
      while (k < s.size() && k - digits_begin < 12 &&
             (hex ? std::iswxdigit(static_cast<wint_t>(s[k])) != 0 : (s[k] >= L'0' && s[k] <= L'9'))) {
        cp = cp * (hex ? 16 : 10) + static_cast<uint64_t>(hex_value(static_cast<char>(s[k])));
        ++k;
      }
      if (k > digits_begin) {
        if (k < s.size() && s[k] == L';') ++k;
        if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
        out.push_back(static_cast<wchar_t>(cp));
        i = k;
        continue;
      }
      out.push_back(s[i++]);
      continue;
    }
    size_t k = j;
    while (k < s.size() && k - j < 32 && s[k] != L'\t' && s[k] != L'\n' && s[k] != L'\f' && s[k] != L' ' &&
           s[k] != L'<' && s[k] != L'&' && s[k] != L'#' && s[k] != L';') {
      ++k;
    }
    const std::wstring name = s.substr(j, k - j);
    auto it = kEntities.find(name);
    if (it != kEntities.end() && k < s.size() && s[k] == L';') {
      out.push_back(it->second.cp);
      i = k + 1;
      continue;
    }
    // Longest legacy name that prefixes the run ("&ampx" -> "&x").
    bool done = false;
    for (size_t len = name.size(); len > 0 && !done; --len) {
      auto p = kEntities.find(name.substr(0, len));
      if (p != kEntities.end() && p->second.legacy) {
        out.push_back(p->second.cp);
        i = j + len;
        done = true;
      }
    }
    if (!done) out.push_back(s[i++]);
  }
  return out;
}

// BeautifulSoup(caption, "html.parser").text: tags dropped, character references decoded.
std::wstring html_text(const std::wstring& s) {
  auto no_comments = sub(L"<!--[\\s\\S]*?-->", L"", s);
  return unescape_html(sub(L"</?[a-zA-Z!?][^>]*>", L"", no_comments));
}

// What ftfy.fix_text changes in well-formed text: curly quotes, ligatures, full-width ASCII,
// control characters, line separators. (Mojibake repair is not reproduced.)
std::wstring fix_text(const std::wstring& s) {
  std::wstring out;
  out.reserve(s.size());
  for (wchar_t c : s) {
    const auto cp = static_cast<uint32_t>(c);
    if (cp == 0x02BC || (cp >= 0x2018 && cp <= 0x201B)) {
      out.push_back(L'\'');
    } else if (cp >= 0x201C && cp <= 0x201F) {
      out.push_back(L'"');
    } else if (cp >= 0xFF01 && cp <= 0xFF5E) {
      out.push_back(static_cast<wchar_t>(cp - 0xFEE0));
    } else if (cp == 0x3000) {
      out.push_back(L' ');
    } else if (cp >= 0xFB00 && cp <= 0xFB06) {
      static const wchar_t* kLigatures[] = {L"ff", L"fi", L"fl", L"ffi", L"ffl", L"st", L"st"};
      out += kLigatures[cp - 0xFB00];
    } else if (cp == 0x0132 || cp == 0x0133) {
      out += cp == 0x0132 ? L"IJ" : L"ij";
    } else if (cp == 0x2028 || cp == 0x2029 || cp == 0x85) {
      out.push_back(L'\n');
    } else if ((cp <= 0x08) || cp == 0x0B || (cp >= 0x0E && cp <= 0x1F) || cp == 0x7F || (cp >= 0x206A && cp <= 0x206F) ||
               cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFC)) {
      // removed control characters
    } else {
      out.push_back(c);
    }
  }
  return out;
}

size_t count_matches(const std::wstring& pattern, const std::wstring& text) {
  auto re = make_regex(pattern);
  return static_cast<size_t>(std::distance(std::wsregex_iterator(text.begin(), text.end(), re), std::wsregex_iterator()));
}

}  // namespace

std::string clean_caption(const std::string& input) {
  std::wstring c = from_utf8(unquote_plus(input));
  c = lower(strip(c));
  c = sub(L"<person>", L"person", c);
  // urls
  c = sub(L"\\b((?:https?:(?:\\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\\w/-]*\\b\\/?(?!@)))",
          L"", c);
  c = sub(L"\\b((?:www:(?:\\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\\w/-]*\\b\\/?(?!@)))",
          L"", c);
  c = html_text(c);
  c = sub(L"@[\\w\\d]+\\b", L"", c);  // @nickname
  // CJK strokes, katakana extensions, enclosed CJK, CJK compatibility, ideographs (ext. A,
  // Yijing hexagrams, unified).
  c = sub(L"[\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff]+", L"", c);
  // every kind of dash -> "-"
  c = sub(L"[\\-\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u301c\u3030\u30a0\ufe31\ufe32"
          L"\ufe58\ufe63\uff0d]+",
          L"-", c);
  c = sub(L"[`\u00b4\u00ab\u00bb\u201c\u201d\u00a8]", L"\"", c);
  c = sub(L"[\u2018\u2019]", L"'", c);
  c = sub(L"&quot;?", L"", c);
  c = sub(L"&amp", L"", c);
  c = sub(L"\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}", L" ", c);  // ip addresses
  c = sub(L"\\d:\\d\\d\\s+$", L"", c);                            // article ids
  c = sub(L"\\\\n", L" ", c);                                      // a literal "\n"
  c = sub(L"#\\d{1,3}\\b", L"", c);
  c = sub(L"#\\d{5,}\\b", L"", c);
  c = sub(L"\\b\\d{6,}\\b", L"", c);
  c = sub(L"[\\S]+\\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", L"", c);  // file names
  c = sub(L"[\"']{2,}", L"\"", c);
  c = sub(L"[\\.]{2,}", L" ", c);
  c = sub(L"[#\u00ae\u2022\u00a9\u2122&@\u00b7\u00ba\u00bd\u00be\u00bf\u00a1\u00a7~\\)\\(\\]\\[\\}\\{\\|\\\\\\/\\*]{1,}", L" ",
          c);  // bad punctuation
  c = sub(L"\\s+\\.\\s+", L" ", c);
  if (count_matches(L"(?:\\-|\\_)", c) > 3) c = sub(L"(?:\\-|\\_)", L" ", c);  // this-is-my-cute-cat
  c = fix_text(c);
  c = unescape_html(unescape_html(c));
  c = sub(L"\\b[a-zA-Z]{1,3}\\d{3,15}\\b", L"", c);    // jc6640
  c = sub(L"\\b[a-zA-Z]+\\d+[a-zA-Z]+\\b", L"", c);    // jc6640vc
  c = sub(L"\\b\\d+[a-zA-Z]+\\d+\\b", L"", c);         // 6640vc231
  c = sub(L"(worldwide\\s+)?(free\\s+)?shipping", L"", c);
  c = sub(L"(free\\s)?download(\\sfree)?", L"", c);
  c = sub(L"\\bclick\\b\\s(?:for|on)\\s\\w+", L"", c);
  c = sub(L"\\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\\simage[s]?)?", L"", c);
  c = sub(L"\\bpage\\s+\\d+\\b", L"", c);
  c = sub(L"\\b\\d*[a-zA-Z]+\\d+[a-zA-Z]+\\d+[a-zA-Z\\d]*\\b", L" ", c);  // j2d1a2a...
  c = sub(L"\\b\\d+\\.?\\d*[x\u0445\u00d7]\\d+\\.?\\d*\\b", L"", c);       // 1920x1080
  c = sub(L"\\b\\s+\\:\\s+", L": ", c);
  c = sub(L"(\\D[,\\./])\\b", L"$1 ", c);
  c = sub(L"\\s+", L" ", c);
  c = sub(L"^[\"']([\\w\\W]+)[\"']$", L"$1", c);
  c = sub(L"^['\\_,\\-\\:;]", L"", c);
  c = sub(L"['\\_,\\-\\:\\-\\+]$", L"", c);
  c = sub(L"^\\.\\S+$", L"", c);
  return to_utf8(strip(c));
}

std::string preprocess_caption(const std::string& caption, bool clean) {
  if (clean) return clean_caption(clean_caption(caption));
  return to_utf8(lower(strip(from_utf8(caption))));
}

}  // namespace ditcache
