// The one translation unit that compiles Boost.Asio, Asio SSL and Beast (separate compilation),
// so other translation units only see declarations and builds stay fast.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
// Boost.JSON's non-template parts (the agent frame reader uses its streaming basic_parser).
#include <boost/json/src.hpp>
