// The rules page: a chosen file's text goes into the document box, to be sent with the form (no upload endpoint).
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.id !== "rules-file" || !input.files || !input.files[0]) return;
  input.files[0].text().then((text) => { document.getElementById("rules-document").value = text; });
});
