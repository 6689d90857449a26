// Keyboard shortcuts on an action's page: "a" approves, "d" denies (after a confirmation),
// unless the comment field has the focus.
document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  const button = { a: "approve", d: "deny" }[event.key];
  const target = button && document.getElementById(button);
  if (target && window.confirm(`${button} this action?`)) {
    target.click();
  }
});
