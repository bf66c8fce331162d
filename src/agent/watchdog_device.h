// The Linux watchdog device (/dev/watchdog) behind an interface, for the watchdog process.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace pgwarden::agent {

// A hardware (or kernel softdog) watchdog timer: once opened it reboots the
// machine unless kept alive, until it is closed with the magic character.
// Owned by the watchdog process's WatchdogCore; used from its main thread only.
class WatchdogDevice {
 public:
  virtual ~WatchdogDevice() = default;

  // Opens the device; from now on the timer runs. Errors: Io (no such device,
  // busy, not permitted), with the path and the reason.
  virtual Status Open() = 0;
  virtual bool is_open() const = 0;
  // Sets the timeout in seconds; returns the timeout the driver applied
  // (drivers round or clamp). REQUIRES: is_open().
  virtual Result<int> SetTimeout(int seconds) = 0;
  // Restarts the timer. REQUIRES: is_open().
  virtual Status Keepalive() = 0;
  // Writes the magic 'V' and closes, which stops the timer (unless the kernel
  // was built with CONFIG_WATCHDOG_NOWAYOUT). No-op when not open.
  virtual void Close() = 0;
  // The path, for messages.
  virtual const std::string& path() const = 0;
};

using WatchdogDevicePtr = std::unique_ptr<WatchdogDevice>;

// The production implementation: open(2), WDIOC_SETTIMEOUT, WDIOC_KEEPALIVE
// from <linux/watchdog.h>. The path is usually /dev/watchdog.
WatchdogDevicePtr MakeLinuxWatchdogDevice(std::string path);

}  // namespace pgwarden::agent
