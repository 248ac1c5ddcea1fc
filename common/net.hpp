// Beast/Asio stream types shared by the few translation units that do network I/O.
// Include only from .cpp files (it pulls in Beast); public headers forward-declare what they need.
#pragma once
#include <sys/socket.h>

#include <cerrno>

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
}  // namespace cg::net
