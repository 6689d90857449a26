// Keyboard shortcuts on an action's page: "a" approves, "d" denies (after a confirmation),
// unless a text field or a menu has the focus. Deny needs a comment: without one, "d"
// puts the focus in the comment field instead.
document.addEventListener("keydown", (event) => {
  const typing =
    event.target instanceof HTMLInputElement ||
    event.target instanceof HTMLTextAreaElement ||
    event.target instanceof HTMLSelectElement;
  if (typing || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  const button = { a: "approve", d: "deny" }[event.key];
  const target = button && document.getElementById(button);
  if (!target) {
    return;
  }
  const comment = document.getElementById("comment");
  if (button === "deny" && comment && !comment.value.trim()) {
    event.preventDefault();
    comment.focus();
    comment.reportValidity();
    return;
  }
  if (window.confirm(`${button} this action?`)) {
    target.click();
  }
});
