// Go's command-line syntax, as upstream's gateway parses its flags with Go's `flag` package, and
// upstream's rules for environment variables (internal/cmdutil). Pure code: no I/O, no globals.
//
// Syntax (Go's flag.FlagSet.Parse, ExitOnError):
//   -flag, --flag               (bool flags only: sets true)
//   -flag=value, --flag=value   (any flag; bool values as strconv.ParseBool: 1 t T TRUE true True 0 f F ...)
//   -flag value, --flag value   (non-bool flags only; `-b false` sets -b and ends the flags at "false")
//   the last occurrence of a flag wins; "--" ends the flags; so does the first argument that is not a
//   flag ("-" counts as such); -h, -help, --help (when not defined) ask for the usage.
// Values: ints as strconv.ParseInt(s, 0, 64) (0x, 0o, 0b, a leading 0 for octal, '_' separators),
// durations as time.ParseDuration (negative allowed), floats as strconv.ParseFloat(s, 64).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/time.hpp"

namespace cg::goflag {

// --- Go's value parsers ---------------------------------------------------------------------------
enum class NumError { none, syntax, range };
std::optional<bool> parse_bool(std::string_view s);  // strconv.ParseBool
NumError parse_int(std::string_view s, int64_t& out);  // strconv.ParseInt(s, 0, 64)
NumError parse_uint(std::string_view s, uint64_t& out);  // strconv.ParseUint(s, 0, 64)
NumError parse_float(std::string_view s, double& out);  // strconv.ParseFloat(s, 64)
std::optional<Duration> parse_duration(std::string_view s);  // time.ParseDuration
std::string format_duration(Duration d);  // time.Duration.String ("2m0s", "1.5s", "0s")
std::string quote(std::string_view s);  // strconv.Quote (as %q prints)

// --- upstream's environment rules (internal/cmdutil) ----------------------------------------------
// Each applies only to a set, non-empty variable; an empty one means "not set" (the default).
// GetEnvInt: fmt.Sscanf(value, "%d"): leading blanks skipped (not a newline), an optional sign, decimal
// digits; what follows them is ignored ("8443abc" is 8443). nullopt (use the default) when no number.
std::optional<int64_t> env_int(std::string_view value);
// GetEnvBool: exactly "true" or "1" is true; anything else ("TRUE", "yes", "on") is false.
bool env_bool(std::string_view value);

// --- the parser -----------------------------------------------------------------------------------
// What a flag does with a value; the alternative chosen is the flag's type (Go: BoolVar, Int64Var,
// Uint64Var, Float64Var, StringVar, DurationVar).
using Setter = std::variant<std::function<void(bool)>, std::function<void(int64_t)>, std::function<void(uint64_t)>,
                            std::function<void(double)>, std::function<void(const std::string&)>, std::function<void(Duration)>>;

struct Flag {
  std::string name;  // without dashes
  std::string usage;  // help text (one paragraph)
  std::string default_text;  // Go's DefValue as its Value.String() prints it ("8443", "true", "30s", a path)
  Setter set;
};

enum class Outcome { ok, help, error };
struct Result {
  Outcome outcome = Outcome::ok;
  std::string error;  // Go's message, e.g. `flag provided but not defined: -x`
  std::vector<std::string> args;  // flag.Args(): the arguments after the flags
  std::vector<std::string> set;  // the flags given, in order (a name repeats when given again)
};

// Parses `args` (argv without the program name), calling each flag's setter as Go does, in order.
// Throws std::logic_error when two flags share a name.
Result parse(const std::vector<Flag>& flags, const std::vector<std::string>& args);

// Go's usage text: "Usage of <program>:\n" and flag.PrintDefaults() (sorted by name; the default is
// shown unless it is the type's zero value; strings quoted).
std::string usage(const std::vector<Flag>& flags, std::string_view program);

}  // namespace cg::goflag
