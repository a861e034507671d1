// mpx/mpx.hpp — the umbrella header, for users: `#include <mpx/mpx.hpp>` brings in all of
// mpx. Library code includes the exact headers it needs instead.
#pragma once

#include "mpx/codec.hpp"
#include "mpx/connection.hpp"
#include "mpx/context.hpp"
#include "mpx/errors.hpp"
#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/subprocess.hpp"
#include "mpx/synchronize.hpp"
#include "mpx/thread.hpp"
