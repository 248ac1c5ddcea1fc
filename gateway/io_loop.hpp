// An io thread's loop. An exception that escapes a handler unwinds only that handler: the objects it
// held (its connection's shared_ptr) are released, which closes that connection, and the thread goes
// back to run(). Input never ends the process; handlers that parse peer data catch closer to the data
// and end their own connection (agent frames: the session; the internal API: the caller). Each escape
// is logged and counted in cluster_gateway_handler_exceptions_total{where="io_loop"}.
#pragma once

namespace boost::asio {
class io_context;
}

namespace cg::gateway {
// Returns when the io_context runs out of work or is stopped.
void run_io(boost::asio::io_context& ioc);
}  // namespace cg::gateway
