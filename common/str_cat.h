// Cat(a, b, ...): string concatenation over std::string_view, C strings,
// std::string and integers. absl::StrCat does not take std::string_view with
// the Debian Abseil build, so the HTTP and metrics code share this one helper.
// Thread-safe: free functions, no state.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

namespace caddie {
namespace str_cat_internal {

inline void AppendOne(std::string* out, std::string_view s) { out->append(s); }
inline void AppendOne(std::string* out, const char* s) { out->append(s); }
inline void AppendOne(std::string* out, const std::string& s) { out->append(s); }
template <typename N, typename = std::enable_if_t<std::is_integral_v<N>>>
void AppendOne(std::string* out, N n) {
  out->append(std::to_string(n));
}

}  // namespace str_cat_internal

// Appends every argument to *out.
template <typename... A>
void AppendAll(std::string* out, const A&... a) {
  (str_cat_internal::AppendOne(out, a), ...);
}

template <typename... A>
std::string Cat(const A&... a) {
  std::string s;
  AppendAll(&s, a...);
  return s;
}

}  // namespace caddie
