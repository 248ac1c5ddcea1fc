// Beast/Asio stream types shared by the few translation units that do network I/O.
// Include only from .cpp files (it pulls in Beast); public headers forward-declare what they need.
#pragma once
#include <sys/socket.h>

#include <cerrno>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

namespace cg::net {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = boost::asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using UpgradeRequest = http::request<http::empty_body>;

// True when the server has closed an idle keep-alive connection (FIN, reset) or sent anything on it
// (its TLS close_notify): an idle HTTP/1.1 connection has nothing to read. Only for connections with
// no operation pending.
inline bool closed_by_peer(TlsStream& s) {
  auto& sock = beast::get_lowest_layer(s).socket();
  if (!sock.is_open()) return true;
  char b;
  ssize_t n = ::recv(sock.native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0) return true;
  return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

// Header fields that belong to one HTTP connection or to the framing of one message (RFC 9110 7.6.1
// and the length fields): never copied from a message received on one connection to a message sent on
// another. Host is not among them; each relay decides about it.
inline bool connection_field(std::string_view name) {
  for (std::string_view f :
       {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"})
    if (beast::iequals(name, f)) return true;
  return false;
}

// True for the errors of a reused keep-alive connection that the server had closed meanwhile (end of
// stream, reset, broken pipe, TLS without close_notify): a request that got nothing back on it may be
// sent once more on a new connection, if its method allows.
inline bool stale_connection_error(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::ssl::error::stream_truncated;
}
}  // namespace cg::net
