// Lift the summary above pytest-html's header; the fix statement's copy button.
// The Clipboard API needs a secure context; a report opened from a file or a mail attachment
// may not be one, so fall back to selecting the text and execCommand('copy').
(function(){
 var box=document.getElementById('pgbv'),h=document.getElementById('environment-header');
 if(box&&h&&h.parentNode){h.parentNode.insertBefore(box,h);}
 document.querySelectorAll('#pgbv button.pgbv-copy').forEach(function(b){
  b.addEventListener('click',function(){
   var code=b.parentNode.querySelector('code'),text=code.textContent;
   function done(){b.textContent='copied';setTimeout(function(){b.textContent='copy';},1500);}
   function fallback(){var r=document.createRange();r.selectNodeContents(code);var s=window.getSelection();
    s.removeAllRanges();s.addRange(r);try{document.execCommand('copy');}catch(e){}done();}
   if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then(done,fallback);}
   else{fallback();}
  });
 });
})();
