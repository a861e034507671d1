// mpx/mpx.hpp — the umbrella header, for users: `#include <mpx/mpx.hpp>` brings in all of
// mpx. Library code includes the exact headers it needs instead.
#pragma once

#include "mpx/errors.hpp"
#include "mpx/connection.hpp"
#include "mpx/queues.hpp"
