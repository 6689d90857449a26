// Live queue: every few seconds, each [data-live] element is refilled with the rows its
// URL returns, without reloading the page, so a half-typed comment elsewhere stays as it
// is; a focused link among the rows keeps the focus (found again by its id).
const EVERY_MS = 4000;

async function refill(element) {
  const response = await fetch(element.dataset.live, { credentials: "same-origin" });
  if (response.status === 401) {
    return false; // logged out: the next click on the page goes to the login form
  }
  if (!response.ok) {
    return true;
  }
  const html = await response.text();
  const focused = element.contains(document.activeElement) ? document.activeElement.id : "";
  element.innerHTML = html;
  const again = focused && document.getElementById(focused);
  if (again) {
    again.focus();
  }
  announce(element);
  return true;
}

// Screen readers hear the count when it changes, not every refill.
function announce(element) {
  const status = document.getElementById("live-status");
  const count = element.querySelector(".count");
  if (status && count && element.dataset.count !== count.textContent) {
    if (element.dataset.count !== undefined) {
      status.textContent = `Pending actions updated: ${count.textContent}`;
    }
    element.dataset.count = count.textContent;
  }
}

function watch(element) {
  const tick = async () => {
    let keepGoing = true;
    if (!document.hidden) {
      try {
        keepGoing = await refill(element);
      } catch (error) {
        keepGoing = true; // the gateway restarts, the network blinks: try again later
      }
    }
    if (keepGoing) {
      window.setTimeout(tick, EVERY_MS);
    }
  };
  window.setTimeout(tick, EVERY_MS);
}

document.querySelectorAll("[data-live]").forEach((element) => {
  announce(element);
  watch(element);
});
